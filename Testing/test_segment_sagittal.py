"""Tests of the real sagittal MRI slices as pseudo-3D volumes (spinekit.segment.sagittal2d) and of the inference ROI."""

from __future__ import annotations

import numpy as np

from spinekit.io import Volume
from spinekit.segment import sagittal2d as s2
from spinekit.segment.inference import EDGE_PAD_MM, MUSCLE_EDGE_PAD_MM, _edge_padding, body_roi

N_CLASSES = 5  # spine task: background, vertebra, sacrum, disc, canal


def test_slab_puts_rows_superior_and_columns_posterior():
    plane = np.zeros((100, 80), np.float32)
    plane[10, 20] = 1.0  # high in the image, anterior
    plane[90, 70] = 2.0  # low in the image, posterior
    volume = s2.slab(plane, pixel_mm=1.0)
    upper = volume.index_to_lps(np.argwhere(volume.array == 1.0)[0][::-1])
    lower = volume.index_to_lps(np.argwhere(volume.array == 2.0)[0][::-1])
    assert upper[2] - lower[2] == 80.0  # LPS z = superior: 80 rows of 1 mm apart
    assert lower[1] - upper[1] == 50.0  # LPS y = posterior
    width_mm = (volume.array[:, :, :] == 1.0).any(axis=(0, 1)).sum() * volume.spacing[0]
    assert width_mm == s2.SLAB_WIDTH_MM
    np.testing.assert_array_equal(s2.centre_plane(volume), plane)


def toy_mask() -> np.ndarray:
    """Three bodies (2) and two discs (1) stacked from row 40 down; the lowest body is S1."""
    mask = np.zeros((260, 160), np.int16)
    row = 40
    for part in (2, 1, 2, 1, 2):
        height = 25 if part == 2 else 8
        mask[row : row + height, 40:75] = part
        row += height
    return mask


def test_plane_targets_mark_unlabelled_bone_as_ambiguous():
    target = s2.plane_targets(toy_mask(), N_CLASSES, pixel_mm=1.0)
    assert target[50, 50] == 1 and target[70, 50] == 3  # body, disc
    assert target[110, 50] == 2  # the body below the lowest disc is S1 (sacrum)
    assert target[50, 80] == N_CLASSES + 2  # just behind the body (ends at column 74): canal, never bone
    assert target[50, 76] == N_CLASSES and target[50, 83] == N_CLASSES  # edge allowance; farther: posterior elements
    assert target[69, 80] == N_CLASSES  # behind a disc: the canal band is for bodies only (disc bulges)
    assert target[50, 30] == 0  # in front of the body: known background
    assert target[20, 50] == N_CLASSES  # above the top label: unlabelled vertebrae
    assert target[150, 50] == N_CLASSES + 1  # below S1: the rest of the sacrum
    assert target[131 + 95, 50] == 0  # beyond the sacrum's reach (90 mm below S1, which ends at row 131)
    assert target[50, 75 + 71] == 0  # beyond the reach of the posterior elements (70 mm)


def test_training_sources_from_the_real_slices(shared_data):
    from spinekit.segment.networks import task_config

    folder = shared_data / "mri_sagittal_2d"
    sources = s2.training_sources(folder, task_config("spine"), "trainA", total_weight=4.0)
    valid = {s.name for s in s2.read_split(folder, "validA")}
    assert len(sources) >= 5
    assert not {s.name.split("/")[1] for s in sources} & valid  # the evaluation slices never train
    assert abs(sum(s.sample_weight for s in sources) - 4.0) < 1e-9
    for source in sources:
        assert 0.0 <= source.image.min() and source.image.max() <= 1.0
        assert {1, 3} <= set(np.unique(source.target).tolist())
    assert s2.training_sources(folder, task_config("muscles")) == []


def test_body_roi_keeps_every_large_part_of_the_body():
    array = np.zeros((60, 60, 60), np.float32)
    array[5:25, 10:50, 10:50] = 100.0  # two halves of a body split by a dark band (MRI muscle between fat)
    array[35:55, 10:50, 10:50] = 80.0
    array[58:60, 0:2, 0:2] = 90.0  # a speck: not body
    roi = body_roi(Volume(array, (3.0, 3.0, 3.0)), margin_mm=0.0)
    assert roi[0].start <= 8 and roi[0].stop >= 52  # both halves (half-resolution mask, opened)
    assert roi[0].stop < 60 and roi[1].start >= 8  # not the speck


def test_edge_padding_cranial_for_the_spine_both_ends_for_the_muscles():
    from spinekit.segment.networks import task_config

    shape = (40, 30, 30)
    at_top = (slice(5, 40), slice(0, 30), slice(0, 30))
    inside = (slice(0, 35), slice(0, 30), slice(0, 30))
    spine, muscles = task_config("spine"), task_config("muscles")
    assert _edge_padding(at_top, shape, spine) == [(0, round(EDGE_PAD_MM / spine.spacing_mm)), (0, 0), (0, 0)]
    assert _edge_padding(inside, shape, spine) == [(0, 0), (0, 0), (0, 0)]
    n = round(MUSCLE_EDGE_PAD_MM / muscles.spacing_mm)
    assert n >= 1 and _edge_padding(at_top, shape, muscles) == [(0, n), (0, 0), (0, 0)]
    assert _edge_padding(inside, shape, muscles) == [(n, 0), (0, 0), (0, 0)]
    assert _edge_padding((slice(3, 30), *at_top[1:]), shape, muscles) == [(0, 0), (0, 0), (0, 0)]
