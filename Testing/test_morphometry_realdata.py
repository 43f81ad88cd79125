"""Morphometry on the real scans in ../shared/data: every level measured, plausible ranges, TS agreement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spinekit.errors import GridMismatchError
from spinekit.io import Volume, read_labels, read_volume
from spinekit.morphometry.context import build_spine_model
from spinekit.morphometry.measure import measure_subject
from spinekit.morphometry.muscles import muscle_cross_sections

TS_TO_VERSE = {25: 26, 26: 26, 27: 24, 28: 23, 29: 22, 30: 21, 31: 20, 32: 19, 33: 18}
TS_MUSCLES = {88: 1, 89: 2, 86: 9, 87: 10}


def _remap(volume: Volume, table: dict[int, int]) -> Volume:
    lut = np.zeros(256, np.int16)
    for source, target in table.items():
        lut[source] = target
    return volume.with_array(lut[volume.array.astype(np.int64)])


@pytest.fixture(scope="module")
def ct_lumbar(shared_data):
    folder = shared_data / "ct_lumbar_3mm"
    image = read_volume(folder / "ct.nii.gz")
    total = read_labels(folder / "totalseg_total_fast.nii.gz")
    return image, total, _remap(total, TS_TO_VERSE), _remap(total, TS_MUSCLES), folder


def test_ct_lumbar_every_level_plausible(ct_lumbar) -> None:
    image, _total, spine, muscles, _ = ct_lumbar
    table = measure_subject(spine, image=image, muscles=muscles, subject="ct_lumbar_3mm")
    for level in ("L1", "L2", "L3", "L4", "L5"):
        for position in ("anterior", "middle", "posterior"):
            row = table[(table["structure"] == level) & (table["metric"] == f"body_height_{position}")]
            assert len(row) == 1
            value = row["value"].iloc[0]
            assert 20.0 <= value <= 35.0 or (math.isnan(value) and row["reason"].iloc[0]), (level, position, value)
    gaps = table[table["metric"] == "endplate_gap_middle"]
    lumbar = gaps[gaps["structure"].isin(["L1/L2", "L2/L3", "L3/L4", "L4/L5"])]
    assert len(lumbar) == 4 and lumbar["value"].between(5.0, 16.0).all(), lumbar[["structure", "value"]]
    psoas = table[table["structure"].isin(["psoas_left L4/L5", "psoas_right L4/L5"]) & (table["metric"] == "csa_cm2")]
    assert len(psoas) == 2 and psoas["value"].between(5.0, 30.0).all(), psoas
    assert (table[table["value"].isna()]["reason"] != "").all()


def test_ct_lumbar_bodies_separated(ct_lumbar) -> None:
    """Whole TotalSegmentator vertebrae at 3 mm: every lumbar body is 45-70 % of its vertebra, cut at the canal."""
    _image, _total, spine, _muscles, _ = ct_lumbar
    model = build_spine_model(spine)
    fractions = {model.frames[v].name: round(model.frames[v].body_fraction, 3) for v in range(20, 25)}
    print("\nct_lumbar_3mm body/vertebra volume:", fractions)
    for v in range(20, 25):
        frame = model.frames[v]
        assert 0.45 <= frame.body_fraction <= 0.70 and not frame.body_flag, (frame.name, frame.body_fraction)
        assert "canal" in frame.body_method or "area profile" in frame.body_method, frame.body_method


@pytest.fixture(scope="module")
def verse004(shared_data):
    folder = shared_data / "verse004_labels"
    spine = read_labels(folder / "sub-verse004_seg-vert_msk.nii.gz")
    centroids = json.loads((folder / "sub-verse004_seg-subreg_ctd.json").read_text())[1:]
    model = build_spine_model(spine)
    return spine, centroids, model, measure_subject(spine, subject="verse004", model=model)


def test_verse004_bodies_separated_at_expert_centroids(verse004) -> None:
    """Body centroids within 4 mm of the expert body centroids (VerSe ctd, voxel i, j, k = P, I, R).

    Measured 1.1-2.2 mm at T9-L4 and 3.7 mm at L5 (tilted 26 degrees by the lordosis); the previous split
    missed by 10-15 mm at every level.
    """
    spine, centroids, model, _table = verse004
    report = {}
    for entry in centroids:
        frame = model.frames[entry["label"]]
        expert = spine.index_to_lps(np.array([entry["X"], entry["Y"], entry["Z"]], float))
        error = float(np.linalg.norm(frame.body_centroid_lps - expert))
        report[frame.name] = (round(frame.body_fraction, 3), round(error, 1))
        low = 0.45 if entry["label"] >= 20 else 0.35
        assert low <= frame.body_fraction <= 0.70 and not frame.body_flag, (frame.name, frame.body_fraction)
        assert error < 4.0, (frame.name, error)
    print("\nverse004 (body/vertebra volume, body centroid error mm):", report)


#: verse004's expert mask has a crushed L1 (body 8-14 mm high against 24-27 mm at T12 and L2: a Genant grade 3
#: fracture) and a short T9 (15-17 mm, counted row by row on the mask's mid-sagittal slice).
VERSE004_RANGES = {"T9": (15.0, 28.0), "L1": (7.0, 16.0)}


@pytest.mark.parametrize("level", ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"])
def test_verse004_body_heights_plausible(verse004, level) -> None:
    table = verse004[3]
    default = (20.0, 35.0) if level.startswith("L") else (17.0, 28.0)
    low, high = VERSE004_RANGES.get(level, default)
    for position in ("anterior", "middle", "posterior"):
        row = table[(table["structure"] == level) & (table["metric"] == f"body_height_{position}")]
        value = row["value"].iloc[0]
        assert low <= value <= high and row["reason"].iloc[0] == "", (level, position, value)


def test_verse004_l1_fracture_graded(verse004) -> None:
    table = verse004[3]
    grade = table[(table["structure"] == "L1") & (table["metric"] == "genant_grade")]["value"].iloc[0]
    assert grade == 3.0
    others = table[(table["metric"] == "genant_grade") & (table["structure"].isin(["T12", "L2", "L3", "L4"]))]
    assert (others["value"] == 0.0).all(), others


def test_dixon_muscles_without_spine(shared_data) -> None:
    folder = shared_data / "mri_axial_dixon_L2L5"
    muscles = read_labels(folder / "tum01_muscles_manual.nii.gz")
    fat = read_volume(folder / "tum01_fat.nii.gz")
    water = read_volume(folder / "tum01_water.nii.gz")
    with pytest.raises(GridMismatchError):  # the water header has lost its origin: never a silent F/(F+0) = 1
        muscle_cross_sections(muscles, None, fat=fat, water=water)
    water = fat.with_array(water.array)  # same acquisition: the fat image's geometry is the right one
    table = muscle_cross_sections(muscles, None, fat=fat, water=water)
    csa = table[table["metric"] == "csa_cm2"].dropna(subset=["value"])
    assert csa["value"].between(0.5, 40.0).all()
    ff = table[(table["metric"] == "fat_fraction") & ~table["structure"].str.contains("slice")]
    assert len(ff) == 4 and ff["value"].between(0.0, 0.5).all(), ff
