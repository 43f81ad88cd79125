"""Shared post-processing: holes filled, spurs smoothed, stray components removed, all reported."""

from __future__ import annotations

import numpy as np
import pytest

from spinekit.io import Volume
from spinekit.postprocess import PostprocessConfig, postprocess_labels


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
