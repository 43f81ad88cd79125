"""Muscle cross-sections, fat fraction, canal and the `spinekit measure` CLI on analytic shapes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_morphometry_shapes import grid_points, straight_spine

from spinekit.cli import main
from spinekit.io import Volume, write_labels, write_volume
from spinekit.morphometry.muscles import muscle_cross_sections

# label -> (half-width along right, half-depth along anterior, right offset)
RADII = {1: (12.0, 10.0, -38.0), 2: (12.0, 10.0, 38.0), 7: (10.0, 14.0, -30.0), 8: (10.0, 14.0, 30.0)}


@pytest.fixture(scope="module")
def shapes_and_muscles():
    from test_morphometry_shapes import add_muscles

    shapes = straight_spine(width_mm=170.0, spacing=1.0)
    return shapes, add_muscles(shapes, RADII)


def _dixon(muscles: Volume, fraction: float) -> tuple[Volume, Volume]:
    inside = muscles.array > 0
    fat = np.where(inside, 100.0 * fraction, 5.0).astype(np.float32)
    water = np.where(inside, 100.0 * (1 - fraction), 95.0).astype(np.float32)
    return muscles.with_array(fat), muscles.with_array(water)


def test_csa_within_two_percent_on_oblique_planes(shapes_and_muscles) -> None:
    shapes, muscles = shapes_and_muscles
    fat, water = _dixon(muscles, 0.3)
    table = muscle_cross_sections(muscles, shapes.spine, fat=fat, water=water)
    for value, (a, b, _) in RADII.items():
        name = {1: "psoas_left", 2: "psoas_right", 7: "erector_spinae_left", 8: "erector_spinae_right"}[value]
        for level in ("L4", "L3/L4", "L4/L5"):
            rows = table[(table["structure"] == f"{name} {level}")].set_index("metric")["value"]
            assert rows["csa_mm2"] == pytest.approx(math.pi * a * b, rel=0.02), (name, level)
            assert rows["csa_cm2"] == pytest.approx(rows["csa_mm2"] / 100)
            assert rows["fat_fraction"] == pytest.approx(0.3, abs=0.02)
            assert rows["functional_csa_cm2"] == pytest.approx(rows["csa_cm2"] * 0.7, rel=0.03)
    left = table[(table["structure"] == "psoas_left L4") & (table["metric"] == "centroid_x_lps")]["value"].iloc[0]
    assert left > shapes.vertebrae[1].centre[0]  # patient left is +x in LPS


def test_ct_fat_fraction_and_mri_without_dixon(shapes_and_muscles) -> None:
    shapes, muscles = shapes_and_muscles
    rng = np.random.default_rng(0)
    inside = muscles.array > 0
    fatty = inside & (rng.random(inside.shape) < 0.25)
    ct = np.where(fatty, -100.0, np.where(inside, 50.0, -1000.0)).astype(np.float32)
    table = muscle_cross_sections(muscles, shapes.spine, image=muscles.with_array(ct))
    ff = table[(table["metric"] == "fat_fraction") & table["structure"].str.endswith(" L4")]["value"]
    # ~250 independent 1 mm voxels per interior section: binomial SD of a 25 % share is 0.027
    assert np.allclose(ff, 0.25, atol=0.06) and abs(ff.mean() - 0.25) < 0.03
    whole = table[(table["metric"] == "fat_fraction") & ~table["structure"].str.contains(" ")]["value"]
    assert len(whole) == 4 and np.allclose(whole, 0.25, atol=0.01)  # tens of thousands of voxels
    imat = table[(table["metric"] == "imat_fraction") & ~table["structure"].str.contains(" ")]["value"]
    assert np.allclose(imat, 0.25, atol=0.01)  # the fatty voxels are exactly the -100 HU ones
    assert "HU" in table[table["metric"] == "fat_fraction"]["method"].iloc[0]
    mri = muscle_cross_sections(muscles, shapes.spine, image=muscles.with_array(np.abs(ct)))
    rows = mri[mri["metric"] == "fat_fraction"]
    assert rows["value"].isna().all() and (rows["reason"] != "").all()


def test_absent_muscle_is_nan_with_reason(shapes_and_muscles) -> None:
    shapes, muscles = shapes_and_muscles
    array = muscles.array.copy()
    points = grid_points(muscles)
    spec = shapes.vertebrae[0]
    array[((points - spec.centre) @ spec.superior > -5.0) & (array == 1)] = 0  # psoas_left absent above L3 mid
    table = muscle_cross_sections(muscles.with_array(array), shapes.spine)
    row = table[(table["structure"] == "psoas_left L3") & (table["metric"] == "csa_mm2")]
    assert row["value"].isna().all() and "absent" in row["reason"].iloc[0]


def test_measure_cli_writes_table_and_figure(shapes_and_muscles, tmp_path) -> None:
    shapes, muscles = shapes_and_muscles
    image = shapes.spine.with_array(np.where(shapes.spine.array > 0, 400.0, 0.0).astype(np.float32))
    write_volume(image, tmp_path / "image.nii.gz")
    write_labels(shapes.spine, tmp_path / "spine.nii.gz")
    write_labels(muscles, tmp_path / "muscles.nii.gz")
    out = tmp_path / "out"
    args = ["measure", "--image", str(tmp_path / "image.nii.gz"), "--spine", str(tmp_path / "spine.nii.gz")]
    assert main([*args, "--muscles", str(tmp_path / "muscles.nii.gz"), "--out", str(out)]) == 0
    table = pd.read_csv(out / "metrics.csv", keep_default_na=False, na_values=[""])
    assert {"body_height_middle", "disc_height_middle", "csa_cm2"} <= set(table["metric"])
    assert (out / "measure.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--out", str(out), "--format", "parquet", "--no-figure"]) == 0
    assert len(pd.read_parquet(out / "metrics.parquet")) > 50


def test_demo_entry_point(shapes_and_muscles, tmp_path) -> None:
    from spinekit.morphometry.cli import demo

    shapes, muscles = shapes_and_muscles
    phantom = tmp_path / "phantom"
    phantom.mkdir()
    write_volume(shapes.spine.with_array(shapes.spine.array.astype(np.float32)), phantom / "image.nii.gz")
    write_labels(shapes.spine, phantom / "spine.nii.gz")
    write_labels(muscles, phantom / "muscles.nii.gz")
    written = demo(tmp_path, phantom)
    assert {p.name for p in written} == {"metrics.csv", "measure.png"}
