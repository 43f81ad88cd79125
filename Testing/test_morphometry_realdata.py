"""Morphometry on the real scans in ../shared/data: every level measured, plausible ranges, TS agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

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


def _ts_find_boundary(mask: np.ndarray, cy: float, cz: float, ay: float, az: float) -> tuple | None:
    """Last inside point from (cy, cz) along +-(ay, az), stepping 0.5 px with a bilinear 0.5 test (TS 2025)."""
    norm = math.hypot(ay, az)
    ay, az = ay / norm, az / norm

    def inside(y: float, z: float) -> bool:
        if not (0 <= y < mask.shape[0] and 0 <= z < mask.shape[1]):
            return False
        value = ndimage.map_coordinates(mask.astype(float), [[y], [z]], order=1, mode="constant")[0]
        return value > 0.5

    ends = []
    for sign in (-1, 1):
        found = None
        for step in np.arange(0.5, max(mask.shape) * 1.5, 0.5):
            if not inside(cy + sign * ay * step, cz + sign * az * step):
                for back in np.arange(step - 0.5, step, 0.125):
                    if inside(cy + sign * ay * back, cz + sign * az * back):
                        found = (cy + sign * ay * back, cz + sign * az * back)
                        break
                break
        ends.append(found)
    return None if None in ends else tuple(ends)


def totalseg_heights(
    verte: np.ndarray, body: np.ndarray, spacing, labels_cranial_first: list[int], central: bool = False
) -> dict:
    """Re-implementation of TotalSegmentator's spine-report heights (measure_verte_height.py, 2025).

    Arrays in RAS-canonical [x, y, z] order. Centroids of 3 mm-eroded bodies, height axis from the
    neighbours' centroids, horizontal axis perpendicular in the sagittal plane, 15/50/85 % positions,
    sagittal slice (25 % margins, 5 mm steps) with the largest height spread.
    """
    sx, sy, sz = spacing
    erode = tuple(max(1, int(round(3.0 / s))) for s in spacing)
    masks, centroids = {}, []
    for v in labels_cranial_first:
        mask = (verte == v) & body
        smooth = ndimage.binary_erosion(mask, np.ones(tuple(2 * e + 1 for e in erode), bool))
        c = np.argwhere(smooth if smooth.any() else mask).mean(axis=0) if mask.any() else np.full(3, np.nan)
        masks[v] = (mask, smooth)
        centroids.append(c)
    out = {}
    for n, v in enumerate(labels_cranial_first):
        if n == 0 or n == len(labels_cranial_first) - 1:
            continue  # neighbours on both sides, as the helpers in TS
        mask, smooth = masks[v]
        axis = centroids[n + 1] - centroids[n - 1]
        axis = axis / np.linalg.norm(axis)
        hy, hz = -axis[2] * sz / sy, axis[1] * sy / sz  # perpendicular in physical (y, z), back to pixels
        xs = np.nonzero(smooth.any(axis=(1, 2)))[0]
        margin = int(round(0.25 * (xs[-1] - xs[0] + 1)))
        best, spread = None, -1.0
        candidates = range(xs[0] + margin, xs[-1] - margin + 1, max(1, int(round(5.0 / sx))))
        if central:  # TS's fallback slice: the one through the centroid
            candidates = [int(round(centroids[n][0]))]
        for x in candidates:
            ends = _ts_find_boundary(smooth[x], centroids[n][1], centroids[n][2], hy, hz)
            if ends is None:
                continue
            heights = []
            for fraction in (0.15, 0.5, 0.85):
                py = ends[0][0] + fraction * (ends[1][0] - ends[0][0])
                pz = ends[0][1] + fraction * (ends[1][1] - ends[0][1])
                seg = _ts_find_boundary(mask[x], py, pz, axis[1], axis[2])
                heights.append(math.hypot((seg[1][0] - seg[0][0]) * sy, (seg[1][1] - seg[0][1]) * sz) if seg else 0)
            if all(h > 0 for h in heights) and max(heights) - min(heights) > spread:
                spread, best = max(heights) - min(heights), heights
        out[v] = best
    return out


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


@pytest.mark.xfail(
    reason="known gap: TS's 2D sagittal-slice method (eroded-mask depth, first-exit heights, max-spread slice) "
    "reads 2-6 mm lower than our 3D patch median on L1-L4 of this scan; under investigation",
    strict=False,
)
def test_ct_lumbar_heights_agree_with_totalsegmentator_method(ct_lumbar) -> None:
    _image, total, spine, _muscles, folder = ct_lumbar
    body = read_labels(folder / "totalseg_vertebrae_body.nii.gz").array == 1
    # Both measured on the same body masks (vertebra AND TotalSegmentator's body class), as the spine report does.
    bodies = spine.with_array(np.where(body, spine.array, 0).astype(np.int16))
    model = build_spine_model(bodies)
    order = [18, 19, 20, 21, 22, 23, 24, 26]
    verte = spine.array.transpose(2, 1, 0)  # [i, j, k] = RAS-canonical x, y, z for this LPS(-1,-1,1) image
    assert np.allclose(np.diag(spine.direction), (-1, -1, 1))
    reference = totalseg_heights(verte, body.transpose(2, 1, 0), spine.spacing, order)
    compared = 0
    for v in (20, 21, 22, 23):
        ours = model.heights[v].heights
        theirs = dict(zip(("posterior", "middle", "anterior"), reference[v], strict=True))
        for position in ("posterior", "middle", "anterior"):
            assert ours[position] == pytest.approx(theirs[position], abs=3.0), (v, position, ours, theirs)
            compared += 1
    assert compared == 12


@pytest.fixture(scope="module")
def verse004_table(shared_data):
    spine = read_labels(shared_data / "verse004_labels" / "sub-verse004_seg-vert_msk.nii.gz")
    return measure_subject(spine, subject="verse004")


@pytest.mark.parametrize(
    "level",
    [
        "T10", "T11", "T12", "L2", "L3", "L4", "L5",
        pytest.param("L1", marks=pytest.mark.xfail(
            reason="known bug: the L1 body is not separated from its posterior elements (area profile never drops "
            "below half its peak), so the PCA axis tilts 22 degrees and heights read 9-13 mm", strict=True)),
    ],
)  # fmt: skip
def test_verse004_body_heights_plausible(verse004_table, level) -> None:
    table = verse004_table
    value = table[(table["structure"] == level) & (table["metric"] == "body_height_middle")]["value"].iloc[0]
    assert 15.0 <= value <= 35.0, (level, value)


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
