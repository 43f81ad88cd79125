"""Tests of the anatomical clean-up of the spine network's classes (spinekit.segment.column) and the disc chain."""

from __future__ import annotations

import numpy as np

from spinekit.io import Volume, read_labels, read_volume
from spinekit.segment import column
from spinekit.segment.instances import assign_instances

SPACING = 3.0


def column_map() -> np.ndarray:
    """LPS network-grid semantic map (k = superior, j = posterior, i = left) of a column: sacrum, 5 discs/vertebrae.

    Bodies 27 mm high, discs 9 mm, 48 mm wide; canal 12 mm wide behind the bodies; axis at i = 30 (x = 90 mm).
    """
    array = np.zeros((80, 40, 60), np.uint8)
    array[2:16, 8:22, 18:42] = column.SACRUM
    k = 16
    for _ in range(5):
        array[k : k + 3, 8:20, 22:38] = column.DISC
        k += 3
        array[k : k + 9, 8:20, 22:38] = column.VERTEBRA
        array[k : k + 9, 24:30, 28:32] = column.VERTEBRA
        k += 9
    array[2:k, 20:24, 28:32] = column.CANAL
    return array


def test_column_rules_remove_pelvis_bowel_and_cranial_sacrum():
    clean = column_map()
    dirty = clean.copy()
    dirty[4:14, 8:22, 0:18] = column.SACRUM  # iliac wing touching the sacrum, 37-88 mm off-axis
    dirty[50:53, 10:14, 38:60] = column.VERTEBRA  # rib on a vertebra, 26-88 mm off-axis
    dirty[40:46, 0:4, 5:10] = column.VERTEBRA  # bowel blob, not connected
    dirty[60:63, 8:20, 22:38][dirty[60:63, 8:20, 22:38] == column.VERTEBRA] = column.SACRUM  # sacrum high up
    dirty[30:40, 22:26, 8:12] = column.CANAL  # canal branch 60 mm lateral, not connected
    volume = Volume(dirty, (SPACING,) * 3)

    cleaned = column.clean_columns(volume).array

    assert np.abs(column.column_axis_x(volume, dirty) - 90.0).max() < 3.5
    assert not cleaned[:, :, :9].any()  # wing beyond the 62 mm sacrum half-width and bowel gone
    assert not cleaned[:, :, 47:].any()  # rib beyond the 50 mm vertebra half-width gone
    assert (cleaned[50:53, 10:14, 38:47] == column.VERTEBRA).all()  # transverse-process range kept
    assert (cleaned[60:63] == column.SACRUM).sum() == 0  # cranial sacrum is vertebra
    assert (cleaned == column.VERTEBRA).sum() >= (clean == column.VERTEBRA).sum()
    assert (cleaned == column.SACRUM).sum() >= (clean == column.SACRUM).sum()


def test_hounsfield_rules_drop_soft_tissue_and_add_missed_cortex():
    clean = column_map()
    hu = np.where(np.isin(clean, (column.VERTEBRA, column.SACRUM)), 250.0, 40.0)
    semantic = clean.copy()
    semantic[43:52, 8:20, 22:24] = 0  # network missed a 6 mm dense edge of L3
    semantic[50:52, 2:6, 26:34] = column.VERTEBRA  # fat 6 mm in front of a body, read as bone
    hu[50:52, 2:6, 26:34] = -90.0
    grid = Volume(semantic, (SPACING,) * 3)

    cleaned = column.clean_columns(grid, grid.with_array(hu)).array

    assert (cleaned[43:52, 8:20, 22:24] == column.VERTEBRA).all()
    assert not cleaned[50:52, 2:6, 26:34].any()


def test_thin_network_discs_grow_over_the_disc_space_only():
    truth = column_map()
    hu = np.select([np.isin(truth, (column.VERTEBRA, column.SACRUM)), truth == column.DISC], [250.0, 90.0], -90.0)
    hu[:, 8:20, 38:44] = 60.0  # psoas-like soft tissue beside the column, not between bodies
    semantic = truth.copy()
    for k in (16, 28, 40, 52, 64):  # the network found only the middle slice of each 3-slice disc
        semantic[k, 8:20, 22:38] = 0
        semantic[k + 2, 8:20, 22:38] = 0
    grid = Volume(semantic, (SPACING,) * 3)

    cleaned = column.clean_columns(grid, grid.with_array(hu)).array

    recovered = (cleaned == column.DISC) & (truth == column.DISC)
    assert recovered.sum() / (truth == column.DISC).sum() > 0.95
    assert not (cleaned[:, :, 38:44] == column.DISC).any()


def test_spurious_close_disc_is_dropped_from_the_chain():
    semantic = column_map()
    semantic[12:13, 10:18, 26:34] = column.DISC  # small "disc" in the sacrum 15 mm below L5-S1 (S1-S2 remnant)
    result = assign_instances(Volume(semantic, (SPACING,) * 3))
    assert result.levels_known
    assert result.levels == [20, 21, 22, 23, 24, 26]  # L1-L5 + sacrum, not shifted by one


def test_real_ct_pipeline_identifies_every_lumbar_level(shared_data):
    """The shipped network + clean-up on a real CT (image held out of training): levels and Dice (TS labels)."""
    from spinekit.label_import import convert_labels
    from spinekit.segment.api import segment_image

    folder = shared_data / "ct_lumbar_3mm"
    result = segment_image(read_volume(folder / "ct.nii.gz"), ("spine",))
    truth = convert_labels(read_labels(folder / "totalseg_total_fast.nii.gz"), "totalsegmentator").spine.array
    predicted = result.spine.array
    assert result.qc["levels_known"]
    for level in range(20, 25):  # L1-L5: the best-overlapping predicted label is the true level
        values, counts = np.unique(predicted[truth == level], return_counts=True)
        keep = values > 0
        assert values[keep][np.argmax(counts[keep])] == level
    is_bone = (predicted >= 1) & (predicted <= 25)
    truth_bone = (truth >= 1) & (truth <= 25)
    dice = 2 * (is_bone & truth_bone).sum() / (is_bone.sum() + truth_bone.sum())
    assert dice > 0.7


def test_sacrum_read_as_vertebra_is_inferred_from_its_length():
    semantic = column_map()
    semantic[semantic == column.SACRUM] = column.VERTEBRA  # network called the sacrum (42 mm here) "vertebra"
    semantic[0:2, 8:22, 18:42] = column.VERTEBRA  # 48 mm in all
    assert not assign_instances(Volume(semantic, (SPACING,) * 3)).levels_known  # below 50 mm: still unknown
    longer = np.concatenate([np.zeros_like(semantic[:4]), semantic])
    longer[0:6, 8:22, 18:42] = column.VERTEBRA  # 60 mm of bone below the lowest disc, no disc in it
    result = assign_instances(Volume(longer, (SPACING,) * 3))
    assert result.levels_known and result.levels == [20, 21, 22, 23, 24, 26]
    assert "sacrum_inferred" in [f["flag"] for f in result.flags]


def test_sacrum_with_its_top_missed_still_anchors_the_count():
    semantic = column_map()
    semantic[10:16][semantic[10:16] == column.SACRUM] = 0  # MRI: network missed the top 18 mm of S1
    result = assign_instances(Volume(semantic, (SPACING,) * 3))  # sacrum 24 mm from the L5/S1 disc centre
    assert result.levels_known and result.levels == [20, 21, 22, 23, 24, 26]
    semantic[5:10][semantic[5:10] == column.SACRUM] = 0  # 39 mm: room for a missed vertebra, so no count
    result = assign_instances(Volume(semantic, (SPACING,) * 3))
    assert not result.levels_known
    assert "sacrum_far_from_lowest_disc" in [f["flag"] for f in result.flags]


def test_a_column_far_beside_the_body_midline_is_not_a_spine():
    from spinekit.segment import qc

    semantic = column_map()  # axis at x = 90 mm
    image = np.zeros(semantic.shape, np.float32)
    image[:, 2:38, 10:50] = 100.0  # body centred on x = 88.5 mm (i = 29.5)
    assert (
        qc.column_off_midline(Volume(semantic, (SPACING,) * 3), qc.body_midline_x(Volume(image, (SPACING,) * 3)))
        is None
    )
    shifted = np.zeros((80, 40, 120), np.uint8)
    shifted[:, :, 55:115] = semantic  # the same column 165 mm to the side
    wide = np.zeros(shifted.shape, np.float32)
    wide[:, 2:38, 10:110] = 100.0  # body centred on x = 178.5 mm: the column (x = 253.5 mm) lies 75 mm beside it
    detail = qc.column_off_midline(Volume(shifted, (SPACING,) * 3), qc.body_midline_x(Volume(wide, (SPACING,) * 3)))
    assert detail is not None and "75 mm" in detail


def test_the_column_is_the_canal_holding_part_beside_which_no_organ_wins():
    true_column = column_map()  # axis at i = 30
    array = np.zeros((80, 40, 150), np.uint8)
    array[:, :, 45:105] = true_column  # axis at x = 225 mm, the body's midline
    organ = true_column.copy()
    organ[organ == column.CANAL] = 0
    organ[2:70, 20:26, 26:34] = column.CANAL  # a larger "canal" in a look-alike organ
    array[:, :, 0:60][organ > 0] = organ[organ > 0]  # axis at x = 90 mm: 135 mm beside the midline
    volume = Volume(array, (SPACING,) * 3)
    midline = np.full(80, 225.0)
    kept = column.column_component(volume, array, midline)
    assert kept[:, :, 60:].any() and not kept[:, :, :40].any()  # the midline column, not the canal-richer organ
    assert column.column_component(volume, array)[:, :, :40].any()  # without the midline, the most canal wins


def test_a_column_without_sacrum_is_read_again_continued_below_the_scan():
    from spinekit.segment.api import column_cut_caudally
    from spinekit.segment.inference import CAUDAL_EDGE_PAD_MM, EDGE_PAD_MM, _edge_padding
    from spinekit.segment.networks import task_config

    whole = Volume(column_map(), (SPACING,) * 3)
    assert not column_cut_caudally(whole)  # sacrum in view: the scan ends in the pelvis
    cut = whole.array.copy()
    cut[cut == column.SACRUM] = 0
    assert column_cut_caudally(whole.with_array(cut))
    assert not column_cut_caudally(whole.with_array(np.zeros_like(cut)))  # nothing found: nothing to continue
    config, shape = task_config("spine"), (80, 40, 60)
    both_ends = (slice(0, 80), slice(0, 40), slice(0, 60))
    below, above = round(CAUDAL_EDGE_PAD_MM / SPACING), round(EDGE_PAD_MM / SPACING)
    assert _edge_padding(both_ends, shape, config)[0] == (0, above)
    assert _edge_padding(both_ends, shape, config, caudal=True)[0] == (below, above)
    inner = (slice(5, 70), slice(0, 40), slice(0, 60))  # the body ends inside the scan: no edge to continue
    assert _edge_padding(inner, shape, config, caudal=True)[0] == (0, 0)
