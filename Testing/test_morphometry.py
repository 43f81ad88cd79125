"""Morphometry on analytic shapes with exact truth, on oblique grids with non-identity origins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_morphometry_shapes import curved_spine, rotation, straight_spine

from spinekit.io import Volume
from spinekit.morphometry.body import body_heights, genant_grade, vertebral_body_mask
from spinekit.morphometry.context import build_spine_model
from spinekit.morphometry.curvature import curvature_measurements
from spinekit.morphometry.discs import disc_measurements, min_area_rectangle, seed_disc_height
from spinekit.morphometry.frames import vertebra_frames
from spinekit.morphometry.measure import measure_subject
from spinekit.tables import COLUMNS, value

WEDGE = {23: (15.0, 27.0)}  # L4: anterior 15 mm, posterior 27 mm


@pytest.fixture(scope="module")
def oblique():
    return straight_spine(wedge=WEDGE)


@pytest.fixture(scope="module")
def oblique_table(oblique):
    return measure_subject(oblique.spine, subject="phantom")


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


def test_grid_is_oblique(oblique) -> None:
    assert not np.allclose(oblique.spine.direction, np.eye(3))
    assert np.linalg.norm(oblique.spine.origin) > 100


def test_frames_match_truth(oblique) -> None:
    frames = vertebra_frames(oblique.spine)
    for spec in oblique.vertebrae:
        frame = frames[spec.label]
        if spec.label in WEDGE:
            continue  # a wedge body's principal axis bisects its endplates, not the generator's axis
        assert _angle(frame.superior, spec.superior) < 1.5
        assert _angle(frame.anterior, spec.anterior) < 2.0
        assert np.linalg.norm(frame.body_centroid_lps - spec.centre) < 0.6
        assert abs(np.dot(frame.right, frame.superior)) < 1e-9
        # right is patient right: LPS -x
        assert frame.right[0] < -0.9


def test_body_mask_excludes_posterior_elements(oblique) -> None:
    spec = oblique.vertebrae[0]
    body = vertebral_body_mask(oblique.spine, spec.label)
    whole = oblique.spine.array == spec.label
    volume = body.sum() * oblique.spine.voxel_volume_mm3
    truth = math.pi * spec.half_width * spec.half_depth * spec.height_anterior
    assert body.sum() < whole.sum()
    assert volume == pytest.approx(truth, rel=0.04)  # pedicle stubs up to the cut are kept


def test_body_heights_within_half_mm(oblique) -> None:
    for spec in oblique.vertebrae:
        heights = body_heights(oblique.spine, spec.label)
        for name, fraction in (("posterior", 0.15), ("middle", 0.5), ("anterior", 0.85)):
            assert heights[name] == pytest.approx(spec.height_at(fraction), abs=0.5), (spec.label, name)


def test_genant_grade_of_wedge(oblique_table) -> None:
    rows = oblique_table[(oblique_table["structure"] == "L4") & (oblique_table["metric"] == "genant_grade")]
    assert rows["value"].iloc[0] == 2.0  # reduction 1 - 16.8/25.2 = 33 %
    assert "type=wedge" in rows["method"].iloc[0]
    assert value(oblique_table, "L3", "genant_grade") == 0.0


@pytest.mark.parametrize(
    ("heights", "grade", "kind"),
    [
        ((27, 27, 27), 0, "normal"),
        ((21, 27, 27), 1, "wedge"),
        ((27, 18, 27), 2, "biconcave"),
        ((15, 27, 27), 3, "wedge"),
    ],
)
def test_genant_thresholds(heights, grade, kind) -> None:
    got, got_kind, _ = genant_grade(*heights)
    assert (got, got_kind) == (grade, kind)


def test_disc_heights_within_half_mm() -> None:
    shapes = straight_spine()
    model = build_spine_model(shapes.spine)
    rows = {(r.structure, r.metric): r for r in disc_measurements(model)}
    for name in ("L3/L4", "L4/L5"):
        for position in ("anterior", "middle", "posterior"):
            assert rows[(name, f"disc_height_{position}")].value == pytest.approx(9.0, abs=0.5)
            assert rows[(name, f"endplate_gap_{position}")].value == pytest.approx(9.0, abs=0.5)


def test_seed_method_on_axis_aligned_grid() -> None:
    shapes = straight_spine(direction=np.eye(3), tilt_deg=0.0, origin_shift=(0.3, -20.0, 55.0))
    model = build_spine_model(shapes.spine)
    height, reason = seed_disc_height(model, 123)
    assert reason == ""
    assert height == pytest.approx(9.0, abs=1.0)  # the disc spans 9 +- 1 voxel rows at 1 mm


def test_seed_method_on_oblique_grid() -> None:
    shapes = straight_spine()  # 23-degree oblique grid, spine tilted 12 degrees, 9 mm discs
    model = build_spine_model(shapes.spine)
    for disc in (122, 123):
        height, reason = seed_disc_height(model, disc)
        assert reason == ""
        assert height == pytest.approx(9.0, abs=0.6), disc  # was 10.4 when a grid slice was used


def test_box_height_is_its_physical_extent() -> None:
    """A box of n slices is n x spacing high (edge to edge), not (n - 1) x spacing (centre to centre)."""
    for spacing, slices in ((2.0, 6), (1.0, 12)):
        array = np.zeros((int(120 / spacing), int(80 / spacing), int(80 / spacing)), np.uint8)
        for n, label in enumerate((24, 23, 22, 21, 20)):
            k0 = int((8 + 22 * n) / spacing)
            array[k0 : k0 + slices, int(24 / spacing) : int(52 / spacing), int(28 / spacing) : int(52 / spacing)] = (
                label
            )
        table = measure_subject(Volume(array, (spacing,) * 3, (10.0, -20.0, 30.0)))
        for metric in ("body_height_middle", "body_height_anterior"):
            assert value(table, "L3", metric) == pytest.approx(12.0, abs=0.1), (spacing, metric)


def test_min_area_rectangle_rotated() -> None:
    corners = np.array([[0, 0], [10, 0], [10, 4], [0, 4]], float)
    c, s = np.cos(0.4), np.sin(0.4)
    short, long, _ = min_area_rectangle(corners @ np.array([[c, s], [-s, c]]) + 7.0)
    assert (short, long) == (pytest.approx(4.0), pytest.approx(10.0))


def test_lordosis_from_endplates() -> None:
    tilts = {20: -10.0, 21: -4.0, 22: 2.0, 23: 10.0, 24: 18.0, 26: 30.0}
    shapes = curved_spine(tilts)
    model = build_spine_model(shapes.spine)
    rows = {r.metric: r for r in curvature_measurements(model)}
    assert rows["lumbar_lordosis"].value == pytest.approx(40.0, abs=2.0)
    assert rows["lumbar_lordosis_centroid"].value > 10.0
    assert math.isnan(rows["thoracic_kyphosis"].value) and rows["thoracic_kyphosis"].reason
    assert math.isnan(rows["sagittal_vertical_axis"].value) and "C7" in rows["sagittal_vertical_axis"].reason


def test_kyphosis_sign() -> None:
    tilts = {16: 12.0, 17: 6.0, 18: 0.0, 19: -6.0}
    model = build_spine_model(curved_spine(tilts).spine)
    rows = {r.metric: r for r in curvature_measurements(model)}
    assert rows["thoracic_kyphosis"].value == pytest.approx(18.0, abs=2.0)
    assert "T9 superior to T12 inferior" in rows["thoracic_kyphosis"].method


def test_table_is_tidy(oblique_table) -> None:
    assert list(oblique_table.columns) == COLUMNS
    assert (oblique_table["subject"] == "phantom").all()
    nan_rows = oblique_table[oblique_table["value"].isna()]
    assert (nan_rows["reason"] != "").all()
    assert (oblique_table["unit"] != "").all()


def test_centroids_in_lps(oblique_table, oblique) -> None:
    spec = oblique.vertebrae[0]
    centroid = [value(oblique_table, "L3", f"body_centroid_{a}_lps") for a in "xyz"]
    assert np.linalg.norm(np.asarray(centroid) - spec.centre) < 0.5


def test_same_answer_on_identity_grid(oblique_table) -> None:
    shapes = straight_spine(wedge=WEDGE, direction=np.eye(3), width_mm=130.0)
    table = measure_subject(shapes.spine)
    # Non-wedged levels: the wedge's 2-degree endplate on an identity grid is a voxel staircase with a
    # 29 mm period, which no line-based method can resolve below half a voxel.
    for level in ("L3", "L5"):
        for metric in ("body_height_posterior", "body_height_middle", "body_height_anterior"):
            assert value(table, level, metric) == pytest.approx(value(oblique_table, level, metric), abs=0.5)
            assert value(table, level, metric) == pytest.approx(27.0, abs=0.5)


def test_border_touching_vertebra_is_nan_with_reason(oblique) -> None:
    spine = oblique.spine
    k_top = np.nonzero(spine.array == 22)[0].mean()
    k_bottom = np.nonzero(spine.array == 24)[0].mean()
    k0 = int(k_top)
    # cut the grid through the most cranial body (L3) so that its body touches the image border
    if k_top > k_bottom:
        cut = Volume(np.ascontiguousarray(spine.array[: k0 + 1]), spine.spacing, spine.origin, spine.direction)
    else:
        origin = spine.index_to_lps(np.array([0.0, 0.0, float(k0)]))
        cut = Volume(np.ascontiguousarray(spine.array[k0:]), spine.spacing, origin, spine.direction)
    table = measure_subject(cut)
    row = table[(table["structure"] == "L3") & (table["metric"] == "body_height_middle")]
    assert row["value"].isna().all()
    assert "border" in row["reason"].iloc[0]
    assert value(table, "L5", "body_height_middle") == pytest.approx(27.0, abs=0.5)


def test_missing_level_and_transitional_l6() -> None:
    shapes = straight_spine(labels=(21, 23, 24, 25), with_discs=False)
    table = measure_subject(shapes.spine)
    missing_l3 = table[(table["structure"] == "L3") & (table["metric"] == "vertebra_volume")]
    assert missing_l3["value"].isna().all() and "missing" in missing_l3["reason"].iloc[0]
    gap = table[(table["structure"] == "L2/L4") & (table["metric"] == "endplate_gap_middle")]
    assert gap["value"].isna().all() and "L3 missing" in gap["reason"].iloc[0]
    assert value(table, "L6", "transitional_vertebra") == 1.0
    assert value(table, "L5/L6", "endplate_gap_middle") == pytest.approx(9.0, abs=0.5)
    assert value(table, "L6", "body_height_middle") == pytest.approx(27.0, abs=0.5)


def test_rotation_helper_is_orthonormal() -> None:
    r = rotation([1, 2, 3], 40)
    assert np.allclose(r @ r.T, np.eye(3))
