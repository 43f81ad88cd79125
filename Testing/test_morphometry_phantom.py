"""Morphometry against the phantom's exact truth (``spinekit.phantom``), identity and oblique grids.

Acceptance (issue): heights within 0.5 mm at 1 mm spacing, CSA within 2 %, fat fraction within 0.02,
lordosis within 2 degrees, centroids within 0.5 mm, also on oblique directions and non-identity origins.
Phantoms are built once per module: L2-L5 in the spine field of view at 1 mm (~200^3 voxels, 3-5 s each),
and L1-S1 at 2 mm for the lordosis (angles do not need 1 mm voxels).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_morphometry_shapes import rotation

from spinekit.morphometry.measure import measure_subject
from spinekit.phantom import PhantomConfig, make_phantom
from spinekit.tables import value

OBLIQUE = dict(direction=tuple(rotation([1.0, 2.0, 0.5], 23.0).ravel()), origin=(-123.4, 87.6, -512.3))
LEVELS = ("L2", "L3", "L4", "L5")
DISCS = ("L2/L3", "L3/L4", "L4/L5")
POSITIONS = ("anterior", "middle", "posterior")
#: Canal width and depth (mm) per level in the phantom (spinekit.phantom.anatomy, after Zhou et al. 2000 and
#: Panjabi et al. 1992); the canal label is the ellipse with semi-axes (width/2 - 1, depth/2 - 1).
CANAL_SIZE_MM = {"L2": (23.0, 16.5), "L3": (23.5, 16.0), "L4": (24.0, 16.0), "L5": (25.0, 16.0)}


def _measured(config: PhantomConfig):
    phantom = make_phantom(config)
    table = measure_subject(phantom.spine, image=phantom.image, muscles=phantom.muscles, subject="phantom")
    return phantom, table


@pytest.fixture(scope="module", params=["identity", "oblique"])
def measured(request):
    extra = OBLIQUE if request.param == "oblique" else {}
    return _measured(PhantomConfig(levels="L2-L5", field_of_view="spine", **extra))


@pytest.fixture(scope="module")
def lumbosacral():
    phantom = make_phantom(PhantomConfig(levels="L1-S1", field_of_view="spine", spacing=(2.0, 2.0, 2.0), **OBLIQUE))
    return phantom, measure_subject(phantom.spine, subject="phantom")


def test_grid_geometry(measured) -> None:
    phantom, _ = measured
    assert phantom.spine.spacing == (1.0, 1.0, 1.0)
    if not np.allclose(phantom.spine.direction, np.eye(3)):
        assert np.linalg.norm(phantom.spine.origin) > 500


def test_body_heights_within_half_mm(measured) -> None:
    phantom, table = measured
    for level in LEVELS:
        truth = phantom.truth["vertebrae"][level]["body_heights_mm"]
        for position in POSITIONS:
            got = value(table, level, f"body_height_{position}")
            assert got == pytest.approx(truth[position], abs=0.5), (level, position, got, truth[position])


def test_disc_heights_within_half_mm(measured) -> None:
    phantom, table = measured
    for disc in DISCS:
        truth = phantom.truth["discs"][disc]["heights_mm"]
        for position in POSITIONS:
            got = value(table, disc, f"disc_height_{position}")
            assert got == pytest.approx(truth[position], abs=0.5), (disc, position, got, truth[position])
            # The endplate gap samples three single lines (no surface fit): up to 0.6 mm of voxel staircase.
            gap = value(table, disc, f"endplate_gap_{position}")
            assert gap == pytest.approx(truth[position], abs=0.75), (disc, position, gap, truth[position])


def test_seed_disc_height_brackets_the_wedge(measured) -> None:
    phantom, table = measured
    for disc in DISCS:
        truth = phantom.truth["discs"][disc]["heights_mm"]
        seed = value(table, disc, "disc_height_seed")
        # The rectangle around a wedge-shaped section is at least its tallest side and at most ~2 mm more.
        assert truth["anterior"] - 0.5 <= seed <= truth["anterior"] + 2.5, (disc, seed, truth)


def test_centroids_within_half_mm(measured) -> None:
    phantom, table = measured
    for level in LEVELS:
        truth = phantom.truth["vertebrae"][level]
        got = np.array([value(table, level, f"centroid_{a}_lps") for a in "xyz"])
        assert np.linalg.norm(got - truth["centroid_lps"]) < 0.5, (level, got, truth["centroid_lps"])
        body = np.array([value(table, level, f"body_centroid_{a}_lps") for a in "xyz"])
        # The body cut keeps pedicle stubs up to the posterior wall: the body centroid lies up to 0.7 mm behind.
        assert np.linalg.norm(body - truth["body_centroid_lps"]) < 0.75, (level, body, truth["body_centroid_lps"])
    for disc in DISCS:
        truth = phantom.truth["discs"][disc]["centroid_lps"]
        got = np.array([value(table, disc, f"centroid_{a}_lps") for a in "xyz"])
        assert np.linalg.norm(got - truth) < 0.5, (disc, got, truth)


def test_muscle_csa_within_two_percent(measured) -> None:
    phantom, table = measured
    compared = 0
    for muscle, truth in phantom.truth["muscles"].items():
        for landmark, area in truth["csa_mm2"].items():
            if area <= 0:
                continue
            got = value(table, f"{muscle} {landmark}", "csa_mm2")
            assert got == pytest.approx(area, rel=0.02), (muscle, landmark, got, area)
            compared += 1
    assert compared == 8 * 7


def test_fat_fraction_within_002(measured) -> None:
    phantom, table = measured
    for muscle, truth in phantom.truth["muscles"].items():
        assert value(table, muscle, "fat_fraction") == pytest.approx(truth["fat_fraction"], abs=0.02), muscle
        for landmark in ("L3", "L4/L5"):
            got = value(table, f"{muscle} {landmark}", "fat_fraction")
            assert got == pytest.approx(truth["fat_fraction"], abs=0.02), (muscle, landmark, got)


def test_canal_area_per_level(measured) -> None:
    _phantom, table = measured
    for level, (width, depth) in CANAL_SIZE_MM.items():
        expected = math.pi * (width / 2 - 1) * (depth / 2 - 1)
        got = value(table, f"canal {level}", "canal_area")
        # A 7 x 11 voxel ellipse digitised on a grid it nearly parallels is off by up to ~3 % (lattice-point
        # error of the voxelised label itself, measured 0.3-2.9 % on these phantoms), not by the method.
        assert got == pytest.approx(expected, rel=0.04), (level, got, expected)


def test_lordosis_within_two_degrees(lumbosacral) -> None:
    phantom, table = lumbosacral
    truth = phantom.truth["curvature"]["lordosis_deg"]
    assert value(table, "lumbar spine", "lumbar_lordosis") == pytest.approx(truth, abs=2.0)
    row = table[table["metric"] == "thoracic_kyphosis"]
    assert row["value"].isna().all() and row["reason"].iloc[0]


def test_transitional_l6_phantom() -> None:
    phantom = make_phantom(
        PhantomConfig(levels="L4-S1", field_of_view="spine", spacing=(2.0, 2.0, 2.0), transitional="L6")
    )
    table = measure_subject(phantom.spine, subject="phantom")
    assert value(table, "L6", "transitional_vertebra") == 1.0
    truth = phantom.truth["vertebrae"]["L6"]["body_heights_mm"]
    assert value(table, "L6", "body_height_middle") == pytest.approx(truth["middle"], abs=1.0)  # 2 mm voxels
    for disc in ("L5/L6", "L6/S1"):
        truth = phantom.truth["discs"][disc]["heights_mm"]["middle"]
        assert value(table, disc, "disc_height_middle") == pytest.approx(truth, abs=1.0), disc
    assert not (table["structure"] == "L5/S1").any()  # no phantom disc between non-adjacent levels
