"""Shared post-processing: holes filled, spurs smoothed, stray components removed, all reported."""

from __future__ import annotations

import numpy as np
import pytest

from spinekit.io import Volume
from spinekit.postprocess import PostprocessConfig, postprocess_labels, upsample_labels


def _case() -> Volume:
    array = np.zeros((30, 30, 30), np.int16)
    array[5:20, 5:20, 5:20] = 3
    array[10:13, 10:13, 10:13] = 0  # enclosed hole: 27 voxels
    array[25:27, 25:27, 25:27] = 3  # stray component: 8 voxels
    array[5:20, 22:26, 5:10] = 7  # another label, untouched
    return Volume(array, (1.0, 1.0, 2.0), (1.0, 2.0, 3.0))


def test_fill_holes_and_largest_component_report() -> None:
    labels, report = postprocess_labels(_case(), PostprocessConfig(smooth_sigma_mm=0.0))
    row = report.set_index("label").loc[3]
    assert row["holes_filled_voxels"] == 27
    assert row["components_removed"] == 1 and row["component_voxels_removed"] == 8
    assert row["removed_mm3"] == pytest.approx(8 * 2.0)
    assert (labels.array[10:13, 10:13, 10:13] == 3).all()
    assert (labels.array[25:27, 25:27, 25:27] == 0).all()
    assert (labels.array == 7).sum() == (_case().array == 7).sum()


def test_smoothing_removes_a_spur_but_keeps_the_block() -> None:
    volume = _case()
    array = volume.array.copy()
    array[12, 12, 20:23] = 3  # one-voxel spur
    labels, report = postprocess_labels(volume.with_array(array), PostprocessConfig(smooth_sigma_mm=1.0))
    assert (labels.array[12, 12, 21:23] == 0).all()
    assert (labels.array[8:17, 8:17, 8:17] == 3).all()
    assert report.set_index("label").loc[3, "smoothing_removed_voxels"] > 0
    assert labels.same_grid(volume)


def _ball_and_slab(spacing: float, shape_mm: float = 60.0) -> Volume:
    """A 15 mm radius ball (label 2) resting on a 9 mm slab (label 5), voxel centres sampled at ``spacing`` mm."""
    n = int(round(shape_mm / spacing))
    centres = (np.arange(n) + 0.5) * spacing
    z, y, x = np.meshgrid(centres, centres, centres, indexing="ij")
    array = np.zeros((n, n, n), np.int16)
    array[(z - 33) ** 2 + (y - 30) ** 2 + (x - 30) ** 2 <= 15**2] = 2
    array[(z >= 9) & (z < 18)] = 5
    corner = np.zeros(3)
    return Volume(array, (spacing,) * 3, tuple(corner + spacing / 2))


def test_upsampled_labels_follow_the_true_surface_better_than_nearest():
    from spinekit.io import resample_like

    coarse, fine = _ball_and_slab(3.0), _ball_and_slab(1.0)
    smooth = upsample_labels(coarse, fine).array
    blocky = resample_like(coarse, fine, is_label=True).array
    truth = fine.array

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert dice(smooth == 2, truth == 2) > dice(blocky == 2, truth == 2) + 0.01
    assert dice(smooth == 2, truth == 2) > 0.95
    assert abs((smooth == 2).sum() - (truth == 2).sum()) / (truth == 2).sum() < 0.05  # volume kept within 5 %
    assert dice(smooth == 5, truth == 5) > 0.97
    assert set(np.unique(smooth)) == {0, 2, 5}
