"""Phantom generator: every truth value is checked against the label maps and images it produced."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from spinekit.errors import InputError
from spinekit.io import Volume, read_labels
from spinekit.phantom import (
    FollowupConfig,
    PhantomConfig,
    hu_from_bmd,
    load_truth,
    make_followup,
    make_phantom,
)
from spinekit.phantom.shapes import POSTERIOR

SMALL = PhantomConfig(levels="L2-L4", field_of_view="spine")
OBLIQUE = tuple(Rotation.from_euler("xyz", [12, -9, 20], degrees=True).as_matrix().ravel())


def sample_labels(volume: Volume, points: np.ndarray) -> np.ndarray:
    """Nearest-neighbour label at LPS points (0 outside the grid)."""
    ijk = volume.lps_to_index(points)
    return ndimage.map_coordinates(volume.array, ijk[:, ::-1].T, order=0, mode="constant", cval=0)


def label_centroid(volume: Volume, label: int) -> np.ndarray:
    idx = np.argwhere(volume.array == label)
    return volume.index_to_lps(idx[:, ::-1].astype(float)).mean(axis=0)


def height_along(volume: Volume, label: int, line: list, lateral: np.ndarray, step: float = 0.05) -> float:
    """Length of ``label`` along a height line (LPS), averaged over a 9 x 9 bundle of parallel lines (+-2 mm).

    A label map locates a surface parallel to a grid plane only to +-half a voxel; on an oblique grid the
    bundle samples every phase of the grid, so its mean length is unbiased.
    """
    a, b = np.asarray(line[0]), np.asarray(line[1])
    axis = (b - a) / np.linalg.norm(b - a)
    other = np.cross(axis, lateral)
    centre = (a + b) / 2
    ts = np.arange(-25, 25, step)
    lengths = []
    for u in np.linspace(-2, 2, 9):
        for w in np.linspace(-2, 2, 9):
            start = centre + u * lateral + w * other
            labels = sample_labels(volume, start + ts[:, None] * axis)
            lengths.append((labels == label).sum() * step)
    return float(np.mean(lengths))


def plane_area(volume: Volume, label: int, plane: dict, step: float = 0.25) -> float:
    point, left, post = (np.asarray(plane[k]) for k in ("point_lps", "left_axis_lps", "posterior_axis_lps"))
    xs = np.arange(-140, 140, step)
    vs = np.arange(-90, 120, step)
    xx, vv = np.meshgrid(xs, vs, indexing="ij")
    pts = point + xx.reshape(-1, 1) * left + vv.reshape(-1, 1) * post
    return float((sample_labels(volume, pts) == label).sum() * step * step)


@pytest.fixture(scope="session")
def small():
    return make_phantom(SMALL)


@pytest.fixture(scope="session")
def oblique():
    return make_phantom(replace(SMALL, spacing=(1.25, 1.25, 1.25), direction=OBLIQUE, origin=(-40.0, 25.0, 310.0)))


def test_deterministic_per_seed():
    config = PhantomConfig(levels="L3-L4", spacing=(3.0, 3.0, 3.0), field_of_view="spine")
    a, b = make_phantom(config), make_phantom(config)
    c = make_phantom(replace(config, seed=5))
    assert np.array_equal(a.image.array, b.image.array)
    assert np.array_equal(a.spine.array, b.spine.array) and np.array_equal(a.muscles.array, b.muscles.array)
    assert json.dumps(a.truth) == json.dumps(b.truth)
    assert not np.array_equal(a.image.array, c.image.array)
    assert np.array_equal(a.spine.array, c.spine.array)  # the seed changes noise, not anatomy (variability=0)


def test_disc_middle_height_from_label_map(small):
    disc = small.truth["discs"]["L2/L3"]
    assert disc["label"] == 121
    assert disc["heights_mm"]["middle"] == pytest.approx(10.0, abs=1e-3)
    assert disc["heights_mm"]["anterior"] > disc["heights_mm"]["middle"] > disc["heights_mm"]["posterior"]
    lateral = np.asarray(small.truth["vertebrae"]["L2"]["left_axis_lps"])
    measured = height_along(small.spine, 121, disc["height_lines_lps"]["middle"], lateral)
    assert measured == pytest.approx(10.0, abs=0.5)


def test_disc_height_override():
    p = make_phantom(PhantomConfig(levels="L4-L5", spacing=(2.0, 2.0, 2.0), field_of_view="spine",
                                   disc_heights_mm={"L4/L5": 8.0}))  # fmt: skip
    assert p.truth["discs"]["L4/L5"]["heights_mm"]["middle"] == pytest.approx(8.0, abs=1e-3)


def test_muscle_csa_in_stated_plane(small):
    truth = small.truth
    for key in ("psoas_left", "erector_spinae_right", "multifidus_left", "quadratus_lumborum_right"):
        muscle = truth["muscles"][key]
        for landmark in ("L3", "L3/L4"):
            area = muscle["csa_mm2"][landmark]
            assert area == pytest.approx(muscle["csa_set_mm2"][landmark], rel=0.01)
            measured = plane_area(small.muscles, muscle["label"], truth["csa_planes"][landmark])
            assert measured == pytest.approx(area, rel=0.02), (key, landmark)
    psoas = truth["muscles"]["psoas_left"]["csa_mm2"]
    assert psoas["L2"] < psoas["L3"] < psoas["L4"]  # psoas grows caudally
    assert 0 < truth["muscles"]["erector_spinae_left"]["fat_fraction"] < 0.5


def test_centroids_match_label_map(small):
    for name, vert in small.truth["vertebrae"].items():
        error = np.linalg.norm(label_centroid(small.spine, vert["label"]) - vert["centroid_lps"])
        assert error < 0.3, (name, error)
        volume = (small.spine.array == vert["label"]).sum() * small.spine.voxel_volume_mm3
        assert volume == pytest.approx(vert["volume_mm3"], rel=0.03)
    for name, disc in small.truth["discs"].items():
        assert np.linalg.norm(label_centroid(small.spine, disc["label"]) - disc["centroid_lps"]) < 0.3, name


def test_oblique_direction_and_origin(small, oblique):
    assert np.allclose(oblique.image.direction.ravel(), OBLIQUE)
    assert np.allclose(oblique.image.origin, (-40.0, 25.0, 310.0))
    for name, vert in oblique.truth["vertebrae"].items():
        error = np.linalg.norm(label_centroid(oblique.spine, vert["label"]) - vert["centroid_lps"])
        assert error < 0.5, (name, error)
    # same anatomy: relative positions and heights do not depend on the grid
    rel = lambda t: np.subtract(t["vertebrae"]["L2"]["centroid_lps"], t["vertebrae"]["L4"]["centroid_lps"])  # noqa: E731
    assert np.allclose(rel(oblique.truth), rel(small.truth), atol=1e-3)
    assert oblique.truth["discs"]["L3/L4"]["heights_mm"] == small.truth["discs"]["L3/L4"]["heights_mm"]


def test_trabecular_hu_matches_bmd():
    for bmd in (80.0, 180.0):
        p = make_phantom(PhantomConfig(levels="L3-L3", spacing=(1.5, 1.5, 1.5), bmd_mg_cm3=bmd, field_of_view="spine"))
        vert = p.truth["vertebrae"]["L3"]
        centre = np.asarray(vert["body_centroid_lps"])
        idx = np.argwhere(np.ones(p.image.array.shape, dtype=bool))
        lps = p.image.index_to_lps(idx[:, ::-1].astype(float))
        inside = np.linalg.norm(lps - centre, axis=1) < 8.0
        mean_hu = p.image.array.reshape(-1)[inside].mean()
        assert vert["trabecular_hu"] == pytest.approx(hu_from_bmd(bmd))
        assert mean_hu == pytest.approx(hu_from_bmd(bmd), abs=3.0)


def test_wedge_fracture_lowers_anterior_height():
    config = replace(SMALL, levels="L3-L4", spacing=(1.25, 1.25, 1.25), direction=OBLIQUE)
    intact = make_phantom(config)
    broken = make_phantom(replace(config, fracture={"level": "L3", "type": "wedge", "height_loss": 0.3}))
    before = intact.truth["vertebrae"]["L3"]
    after = broken.truth["vertebrae"]["L3"]
    anterior = before["body_heights_mm"]["anterior"]
    assert after["body_heights_mm"]["anterior"] == pytest.approx(0.7 * anterior, abs=1e-3)
    assert after["body_heights_mm"]["posterior"] == pytest.approx(before["body_heights_mm"]["posterior"], abs=1e-3)
    assert broken.truth["fracture"]["heights_before_mm"] == before["body_heights_mm"]
    assert after["wedge_angle_deg"] < before["wedge_angle_deg"] - 10
    lateral = np.asarray(after["left_axis_lps"])
    m_before = height_along(intact.spine, 22, before["height_lines_lps"]["anterior"], lateral)
    m_after = height_along(broken.spine, 22, after["height_lines_lps"]["anterior"], lateral)
    assert m_before == pytest.approx(anterior, abs=0.5)
    assert m_after == pytest.approx(0.7 * anterior, abs=0.5)
    assert m_before - m_after == pytest.approx(0.3 * anterior, abs=0.5)
    # the disc of an oblique grid measures its set middle height too
    disc = intact.truth["discs"]["L3/L4"]
    assert height_along(intact.spine, 122, disc["height_lines_lps"]["middle"], lateral) == pytest.approx(
        disc["heights_mm"]["middle"], abs=0.5
    )


@pytest.mark.parametrize("kind", ["crush", "biconcave"])
def test_other_fractures(kind):
    config = PhantomConfig(levels="L1-L2", spacing=(2.0, 2.0, 2.0), field_of_view="spine")
    before = make_phantom(config).truth["vertebrae"]["L1"]["body_heights_mm"]
    after = make_phantom(replace(config, fracture={"level": "L1", "type": kind, "height_loss": 0.25}))
    heights = after.truth["vertebrae"]["L1"]["body_heights_mm"]
    assert heights["middle"] == pytest.approx(0.75 * before["middle"], abs=1e-3)
    if kind == "biconcave":  # anterior and posterior walls keep their height
        assert heights["anterior"] == pytest.approx(before["anterior"], abs=1e-3)


def test_followup_motion_maps_baseline_onto_followup():
    config = PhantomConfig(levels="L2-L4", spacing=(1.5, 1.5, 1.5), field_of_view="spine")
    baseline = make_phantom(config)
    follow = make_followup(baseline, FollowupConfig(seed=3, collapse={"L3": 0.3}))
    info = follow.truth["followup"]
    assert set(info["motions"]) == {"L2", "L3", "L4"}
    spacing = follow.spine.spacing[::-1]
    for name in ("L2", "L4"):
        label = baseline.truth["vertebrae"][name]["label"]
        matrix = np.asarray(info["motions"][name]["matrix"])
        assert np.allclose(np.linalg.inv(matrix), info["motions"][name]["matrix_followup_to_baseline"], atol=1e-6)
        mask = baseline.spine.array == label
        surface = np.argwhere(mask & ~ndimage.binary_erosion(mask))
        moved = baseline.spine.index_to_lps(surface[:, ::-1].astype(float)) @ matrix[:3, :3].T + matrix[:3, 3]
        fmask = follow.spine.array == label
        distance = ndimage.distance_transform_edt(~(fmask & ~ndimage.binary_erosion(fmask)), sampling=spacing)
        d = ndimage.map_coordinates(distance, follow.spine.lps_to_index(moved)[:, ::-1].T, order=1)
        assert d.mean() < 1.0, (name, d.mean())
        predicted = matrix[:3, :3] @ baseline.truth["vertebrae"][name]["centroid_lps"] + matrix[:3, 3]
        assert np.linalg.norm(predicted - label_centroid(follow.spine, label)) < 0.5
    collapse = info["collapse"]["L3"]
    assert collapse["heights_after_mm"]["anterior"] == pytest.approx(
        0.7 * collapse["heights_before_mm"]["anterior"], abs=1e-3
    )
    assert info["motions"]["L2"]["rotation_angle_deg"] <= 10.0 + 1.5 + 1e-6


def test_transitional_l6():
    p = make_phantom(PhantomConfig(levels="L4-S1", transitional="L6", spacing=(2.5, 2.5, 2.5), field_of_view="spine"))
    labels = set(np.unique(p.spine.array).tolist())
    assert {23, 24, 25, 26, 123, 124, 125, 60} <= labels
    assert p.truth["vertebrae"]["L6"]["label"] == 25
    assert set(p.truth["discs"]) == {"L4/L5", "L5/L6", "L6/S1"}


def test_lesions_and_label_map():
    config = PhantomConfig(levels="L3-L3", spacing=(1.0, 1.0, 1.0), field_of_view="spine",
                           lesions=({"level": "L3", "kind": "lytic", "radius_mm": 6.0},))  # fmt: skip
    p = make_phantom(config)
    lesion = p.truth["lesions"][0]
    assert lesion["volume_mm3"] == pytest.approx(4 / 3 * math.pi * 6.0**3, rel=1e-3)
    assert p.lesions is not None
    measured = (p.lesions.array == 1).sum() * p.lesions.voxel_volume_mm3
    assert measured == pytest.approx(lesion["volume_mm3"], rel=0.05)
    assert np.linalg.norm(label_centroid(p.lesions, 1) - lesion["centre_lps"]) < 0.3
    assert p.image.array[p.lesions.array == 1].mean() < hu_from_bmd(config.bmd_mg_cm3) - 80
    with pytest.raises(InputError):
        make_phantom(replace(config, lesions=({"level": "L3", "kind": "blastic", "radius_mm": 15.0},)))


def test_mri_contrasts():
    for modality in ("t1", "t2"):
        p = make_phantom(PhantomConfig(modality=modality, levels="L3-L4", spacing=(2.0, 2.0, 2.0), noise_sd=0.0))
        image, tissue = p.image.array, p.tissue.array
        fat, muscle, csf, nucleus = (np.median(image[tissue == code]) for code in (1, 27, 3, 5))
        assert fat > muscle
        if modality == "t2":
            assert csf > muscle and nucleus > muscle
        else:
            assert csf < muscle


@pytest.mark.parametrize(
    "bad",
    [
        {"levels": "C5-T2"},
        {"modality": "pet"},
        {"fracture": {"level": "L9", "type": "wedge", "height_loss": 0.3}},
        {"fracture": {"level": "L1", "type": "melt", "height_loss": 0.3}},
        {"transitional": "L7"},
        {"direction": (1, 0, 0, 0, 2, 0, 0, 0, 1)},
    ],
)
def test_bad_config_raises(bad):
    with pytest.raises((InputError, Exception)) as info:
        make_phantom(replace(PhantomConfig(spacing=(4.0, 4.0, 4.0)), **bad))
    assert info.type.__module__.startswith("spinekit")


def test_write_and_cli(tmp_path, small):
    paths = small.write(tmp_path / "api")
    assert {"image", "spine", "muscles", "truth"} <= set(paths)
    truth = load_truth(tmp_path / "api")
    assert truth["vertebrae"]["L3"]["label"] == 22
    spine = read_labels(paths["spine"])
    assert np.array_equal(spine.array, small.spine.array)

    from spinekit.cli import main

    out = tmp_path / "cli"
    args = ["phantom", "--out", str(out), "--levels", "L3-L4", "--spacing", "3", "3", "3", "--fov", "spine"]
    rc = main([*args, "--collapse", "L3:0.2", "--collapse-type", "crush"])
    assert rc == 0
    for name in ("image.nii.gz", "spine.nii.gz", "muscles.nii.gz", "truth.json"):
        assert (out / name).is_file() and (out / "followup" / name).is_file()
    info = load_truth(out)["followup"]
    assert "motions" in info and info["collapse"]["L3"]["type"] == "crush"
    assert info["volumes"]["L4"]["change_mm3"] == 0


def test_generation_time_t12_s1_1mm():
    start = time.perf_counter()
    p = make_phantom(PhantomConfig())
    elapsed = time.perf_counter() - start
    assert elapsed < 15.0
    assert set(p.truth["vertebrae"]) == {"T12", "L1", "L2", "L3", "L4", "L5", "S1"}
    assert p.truth["curvature"]["lordosis_deg"] == pytest.approx(45.0, abs=1e-3)


def test_demo_pair_and_followup_options(tmp_path):
    from spinekit.phantom import write_demo_phantom

    paths = write_demo_phantom(tmp_path / "demo", spacing=4.0)
    assert {"image", "spine", "muscles", "truth", "followup_image", "followup_spine", "followup_truth"} <= set(paths)
    truth = load_truth(tmp_path / "demo")
    assert truth["followup"]["collapse"]["L1"]["height_loss"] == 0.3
    config = PhantomConfig(levels="L2-L3", spacing=(3.0, 3.0, 3.0), field_of_view="spine",
                           lesions=({"level": "L2", "kind": "blastic", "radius_mm": 5.0},))  # fmt: skip
    base = make_phantom(config)
    follow = make_followup(base, FollowupConfig(collapse={"L3": 0.2}, collapse_type="biconcave", lesion_growth_mm=2.0))
    assert follow.truth["lesions"][0]["radius_mm"] == pytest.approx(7.0)
    after = follow.truth["followup"]["collapse"]["L3"]
    assert after["heights_after_mm"]["middle"] == pytest.approx(0.8 * after["heights_before_mm"]["middle"], abs=1e-3)
    with pytest.raises(InputError):
        make_followup(base, FollowupConfig(collapse={"L5": 0.2}))


# --- fractures deform the body only; intact levels render alike in both scans ---------------------------------


def posterior_mask(phantom, label: int) -> np.ndarray:
    """Voxels of ``label`` painted as posterior-element bone (pedicles, lamina, processes; not the body)."""
    return (phantom.spine.array == label) & (phantom.tissue.array == POSTERIOR)


def moved_dice(before, after, mask_before: np.ndarray, mask_after: np.ndarray, matrix: np.ndarray) -> float:
    """Dice of ``mask_before`` carried by the rigid ``matrix`` (LPS, before -> after) onto ``mask_after``."""
    pts = before.spine.index_to_lps(np.argwhere(mask_before)[:, ::-1].astype(float))
    moved = pts @ matrix[:3, :3].T + matrix[:3, 3]
    hit = ndimage.map_coordinates(mask_after.astype(np.uint8), after.spine.lps_to_index(moved)[:, ::-1].T, order=0)
    return 2 * float(hit.sum()) / (mask_before.sum() + mask_after.sum())


def test_followup_crush_collapses_the_body_only():
    base = make_phantom(PhantomConfig(levels="L1-L3", spacing=(1.5, 1.5, 1.5), field_of_view="spine"))
    follow = make_followup(base, FollowupConfig(seed=2, collapse={"L2": 0.4}, collapse_type="crush"))
    voxel = base.spine.voxel_volume_mm3
    dice = {}
    for name in ("L1", "L2", "L3"):
        before, after = base.truth["vertebrae"][name], follow.truth["vertebrae"][name]
        assert after["posterior_volume_mm3"] == before["posterior_volume_mm3"]  # same solid, exactly
        mask_b, mask_f = posterior_mask(base, before["label"]), posterior_mask(follow, before["label"])
        assert mask_f.sum() * voxel == pytest.approx(after["posterior_volume_mm3"], rel=0.04), name
        matrix = np.asarray(follow.truth["followup"]["motions"][name]["matrix"])
        dice[name] = moved_dice(base, follow, mask_b, mask_f, matrix)
    assert dice["L2"] > 0.88 and dice["L2"] > min(dice["L1"], dice["L3"]) - 0.02, dice  # was 0.76 when it shrank
    before, after = base.truth["vertebrae"]["L2"], follow.truth["vertebrae"]["L2"]
    lateral = np.asarray(after["left_axis_lps"])
    for key in ("anterior", "middle", "posterior"):
        assert after["body_heights_mm"][key] == pytest.approx(0.6 * before["body_heights_mm"][key], abs=1e-3)
        measured = height_along(follow.spine, 21, after["height_lines_lps"][key], lateral)
        assert measured == pytest.approx(after["body_heights_mm"][key], abs=1.0), key
    # the inferior endplate stays; the superior endplate drops and the disc above fills the gap
    assert after["inferior_endplate_normal_lps"] == pytest.approx(
        list(
            np.asarray(follow.truth["followup"]["motions"]["L2"]["matrix"])[:3, :3]
            @ before["inferior_endplate_normal_lps"]
        ),
        abs=1e-5,
    )
    # the disc above reaches down to the dropped endplate (seen from L2, undoing L2's motion)
    back = np.asarray(follow.truth["followup"]["motions"]["L2"]["matrix_followup_to_baseline"])
    foot = back[:3, :3] @ follow.truth["discs"]["L1/L2"]["height_lines_lps"]["middle"][0] + back[:3, 3]
    top = np.asarray(before["height_lines_lps"]["middle"][1])
    drop = float((top - foot) @ np.asarray(before["superior_axis_lps"]))
    assert drop == pytest.approx(0.4 * before["body_heights_mm"]["middle"], abs=0.2)
    table = follow.truth["followup"]["volumes"]["L2"]
    assert table["change_mm3"] == pytest.approx(after["body_volume_mm3"] - before["body_volume_mm3"], rel=0.01)


@pytest.mark.parametrize("kind", ["wedge", "crush", "biconcave"])
def test_baseline_fracture_keeps_posterior_elements(kind):
    config = PhantomConfig(levels="L1-L3", spacing=(2.0, 2.0, 2.0), field_of_view="spine")
    intact = make_phantom(config)
    broken = make_phantom(replace(config, fracture={"level": "L2", "type": kind, "height_loss": 0.4}))
    before, after = intact.truth["vertebrae"]["L2"], broken.truth["vertebrae"]["L2"]
    assert after["posterior_volume_mm3"] == before["posterior_volume_mm3"]
    # the fractured vertebra keeps its frame (only the grid centring moves the anatomy)
    shift = np.subtract(broken.truth["anatomy_offset_lps"], intact.truth["anatomy_offset_lps"])
    assert np.allclose(np.subtract(after["body_frame_origin_lps"], before["body_frame_origin_lps"]), shift, atol=1e-3)
    assert after["superior_axis_lps"] == before["superior_axis_lps"]
    move = np.eye(4)
    move[:3, 3] = shift
    mask_b, mask_a = posterior_mask(intact, 21), posterior_mask(broken, 21)
    assert mask_a.sum() == pytest.approx(mask_b.sum(), rel=0.05)
    assert moved_dice(intact, broken, mask_b, mask_a, move) > 0.9
    heights_b, heights_a = before["body_heights_mm"], after["body_heights_mm"]
    kept = {"wedge": ("posterior",), "crush": (), "biconcave": ("anterior", "posterior")}[kind]
    for key in ("anterior", "middle", "posterior"):
        expected = heights_b[key] if key in kept else 0.6 * heights_b[key]
        if kind == "wedge" and key == "middle":
            expected = heights_b["middle"] - 0.4 * heights_b["anterior"] / 2
        assert heights_a[key] == pytest.approx(expected, abs=1e-3), key
    # neighbours never share voxels: every level paints its whole solid
    for name, vert in broken.truth["vertebrae"].items():
        assert vert["label_volume_mm3"] == pytest.approx(vert["volume_mm3"], rel=0.03), name


def test_no_solids_overlap_under_lordosis_fracture_and_motion():
    from spinekit.phantom.followup import sample_motions
    from spinekit.phantom.model import build_model

    def overlap_mm3(model) -> float:
        total = 0.0
        shapes = [model.vertebrae[n] for n in model.names]
        for upper, lower in zip(shapes[:-1], shapes[1:], strict=True):
            lo, hi = lower.local_bbox()
            q = np.stack(np.meshgrid(*[np.arange(a, b, 0.75) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
            lps = lower.pose.to_lps(q.reshape(-1, 3))
            lps = lps[lower.tissue(lps) > 0]
            total += (upper.tissue(lps) > 0).sum() * 0.75**3
        return total

    config = PhantomConfig(levels="L2-S1", lordosis_deg=65.0)
    assert overlap_mm3(build_model(config)) == 0
    assert overlap_mm3(build_model(replace(config, fracture={"level": "L3", "type": "crush", "height_loss": 0.5}))) == 0
    spec = sample_motions(config, FollowupConfig(seed=1, collapse={"L2": 0.5}, collapse_type="crush"))
    assert overlap_mm3(build_model(config, spec)) == 0


def test_followup_renders_intact_levels_like_baseline():
    """Intact levels keep their exact volume; label volumes of both scans agree within partial-volume noise.

    The unmoved baseline is the worst case (its left-right faces are parallel to the grid): before the
    mid-sagittal plane was set a quarter voxel off the voxel centres it lost 1.3-1.8 % of L2/L3 at 1.5 mm.
    """
    base = make_phantom(PhantomConfig(levels="L2-L4", spacing=(1.5, 1.5, 1.5), field_of_view="spine"))
    follow = make_followup(base, FollowupConfig(collapse={"L2": 0.3}))
    table = follow.truth["followup"]["volumes"]
    voxel = base.spine.voxel_volume_mm3
    for phantom in (base, follow):
        counts = np.bincount(phantom.spine.array.ravel(), minlength=256)
        for group in ("vertebrae", "discs"):
            for entry in phantom.truth[group].values():
                assert entry["label_volume_mm3"] == pytest.approx(counts[entry["label"]] * voxel, abs=0.1)
    for name in ("L3", "L4"):
        row = table[name]
        assert row["change_mm3"] == 0 and row["baseline_mm3"] == row["followup_mm3"]
        assert row["baseline_label_mm3"] == pytest.approx(row["baseline_mm3"], rel=0.006), name
        assert row["followup_label_mm3"] == pytest.approx(row["followup_mm3"], rel=0.01), name
        assert row["followup_label_mm3"] == pytest.approx(row["baseline_label_mm3"], rel=0.01), name
    assert table["L2"]["change_mm3"] < -0.05 * table["L2"]["baseline_mm3"]


def test_canal_area_in_csa_planes(small):
    canal = small.truth["canal"]
    assert canal["label"] == 60
    assert set(canal["area_mm2"]) == set(small.truth["csa_planes"])
    for landmark in ("L3", "L3/L4"):
        area = canal["area_mm2"][landmark]
        assert area == pytest.approx(canal["area_set_mm2"][landmark], rel=0.02)
        assert area == pytest.approx(math.pi * canal["width_mm"][landmark] * canal["depth_mm"][landmark] / 4, rel=0.02)
        measured = plane_area(small.spine, 60, small.truth["csa_planes"][landmark])
        assert measured == pytest.approx(area, rel=0.03), landmark
    assert canal["width_mm"]["L3"] == pytest.approx(23.5 - 2.0, abs=0.05)  # Panjabi 1992 width, 1 mm dura margin
