"""Per-vertebra registration against known truth: simulated follow-ups of verse004 and phantom pairs."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from spinekit.errors import InputError
from spinekit.io import Volume, read_labels
from spinekit.register.geometry import surface_points_lps, transform_points
from spinekit.register.pipeline import register_spines
from spinekit.register.simulate import Collapse, Lesion, RigidMotion, random_motions, simulate_followup
from spinekit.register.vertebra import RegistrationConfig, register_vertebra
from spinekit.tables import value

L1, L2, L3, L4 = 20, 21, 22, 23


def tre_mm(spine: Volume, label: int, estimated: sitk.Transform, truth: sitk.Transform) -> float:
    """Mean target registration error over the baseline vertebra's surface (mm)."""
    points = surface_points_lps(spine.to_sitk() == label)
    return float(np.linalg.norm(transform_points(estimated, points) - transform_points(truth, points), axis=1).mean())


def matrix_transform(matrix: list) -> sitk.AffineTransform:
    m = np.asarray(matrix, dtype=float)
    return sitk.AffineTransform(tuple(m[:3, :3].ravel()), tuple(m[:3, 3]))


def crop_to_levels(spine: Volume, labels: tuple[int, ...], margin_mm: float = 25.0) -> Volume:
    """The part of a label map around ``labels`` (+ margin), other labels kept: keeps the real-data tests fast."""
    index = np.argwhere(np.isin(spine.array, labels))
    pad = np.ceil(margin_mm / np.asarray(spine.spacing)[::-1]).astype(int)
    low = np.maximum(index.min(axis=0) - pad, 0)
    high = np.minimum(index.max(axis=0) + pad + 1, spine.array.shape)
    array = spine.array[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    return Volume(array, spine.spacing, spine.index_to_lps(low[::-1].astype(float)), spine.direction)


@pytest.fixture(scope="module")
def verse004(shared_data) -> Volume:
    return read_labels(shared_data / "verse004_labels" / "sub-verse004_seg-vert_msk.nii.gz")


@pytest.fixture(scope="module")
def verse_followup(verse004):
    """Five lumbar levels (T12 left out: present at baseline only), L3 crushed by 40 %."""
    lumbar = verse004.with_array(np.where(verse004.array >= 19, verse004.array, 0))
    levels = [19, 20, 21, 22, 23, 24]
    motions = random_motions(levels, np.random.default_rng(7), max_rotation_deg=10.0, max_translation_mm=15.0)
    sim = simulate_followup(lumbar, motions, collapses=[Collapse(L3, 0.4)], drop_levels=[19])
    return lumbar, sim, register_spines(lumbar, sim.spine, subject="verse004")


def test_baseline_bodies_are_morphometry_bodies_cut_by_one_plane(verse004):
    from spinekit.register.body import baseline_bodies

    bodies = baseline_bodies(verse004)
    for label in (L1, L2, L3, L4, 24):
        body = bodies[label]
        vertebra = verse004.array == label
        assert 0.45 <= body.mask.sum() / vertebra.sum() <= 0.70, label
        inside = body.cut.depth_mm(verse004.index_to_lps(np.argwhere(body.mask)[:, ::-1].astype(float)))
        rest = body.cut.depth_mm(verse004.index_to_lps(np.argwhere(vertebra & ~body.mask)[:, ::-1].astype(float)))
        # The body is everything of the vertebra in front of the plane (but stray bits off its largest component).
        assert inside.min() > 0 and (rest > 0).mean() < 0.01, label


def test_simulation_moves_and_collapses_exactly(verse004):
    motion = RigidMotion((0.0, 0.0, 10.0), (5.0, -3.0, 2.0))
    sim = simulate_followup(verse004, {L2: motion}, collapses=[Collapse(L3, 0.4)])
    before = np.argwhere(verse004.array == L2)[:, ::-1]
    centroid = verse004.index_to_lps(before).mean(axis=0)
    after = sim.spine.index_to_lps(np.argwhere(sim.spine.array == L2)[:, ::-1]).mean(axis=0)
    expected = transform_points(sim.transforms[L2], centroid[None, :])[0]
    assert np.linalg.norm(after - expected) < 0.3
    volume_ratio = (sim.spine.array == L2).sum() / before.shape[0]
    assert volume_ratio == pytest.approx(1.0, abs=0.02)
    assert (sim.spine.array == L3).sum() < 0.85 * (verse004.array == L3).sum()


def test_intact_levels_within_one_mm(verse_followup):
    lumbar, sim, result = verse_followup
    for label in (20, 21, 23, 24):
        error = tre_mm(lumbar, label, result.registrations[label].transform, sim.transforms[label])
        assert error <= 1.0, f"level {label}: TRE {error:.2f} mm"
        assert result.quality[label].ok, result.quality[label].reason


def test_collapsed_level_registered_and_height_loss_measured(verse_followup):
    lumbar, sim, result = verse_followup
    error = tre_mm(lumbar, L3, result.registrations[L3].transform, sim.transforms[L3])
    assert error <= 2.0
    assert result.registrations[L3].details["strategy"].startswith("posterior elements")
    table = result.table
    for position in ("anterior", "middle", "posterior"):
        baseline = value(table, "L3", f"height_{position}_baseline")
        loss = value(table, "L3", f"height_loss_{position}")
        assert loss == pytest.approx(0.4 * baseline, abs=1.0), position
        assert abs(value(table, "L2", f"height_loss_{position}")) < 1.0
    assert value(table, "L3", "genant_grade_followup") >= 2
    assert value(table, "L3", "volume_change_percent") < -15


def test_superior_endplate_fracture_registered_on_what_did_not_collapse(verse004):
    verse004 = crop_to_levels(verse004, (L2, L3, L4))
    motions = {L3: RigidMotion((4.0, -6.0, 5.0), (8.0, -9.0, 6.0))}
    sim = simulate_followup(verse004, motions, collapses=[Collapse(L3, 0.4, anchor=-1.0)])
    whole = register_vertebra(verse004, sim.spine, L3, config=RegistrationConfig(changed_body_fraction=1.0))
    ours = register_vertebra(verse004, sim.spine, L3)
    error = tre_mm(verse004, L3, ours.transform, sim.transforms[L3])
    assert error <= 1.0
    # The whole-vertebra fit is pulled by the collapsed endplate: the posterior-element fit is what makes it work.
    assert error < 0.6 * tre_mm(verse004, L3, whole.transform, sim.transforms[L3])


def test_level_in_one_scan_only_is_skipped_with_reason(verse_followup):
    _, _, result = verse_followup
    assert 19 in result.skipped and "baseline only" in result.skipped[19]
    row = result.table[(result.table["label"] == 19)]
    assert len(row) == 1 and "baseline only" in row["reason"].iloc[0]


def test_swapped_labels_are_flagged(verse_followup):
    lumbar, sim, _ = verse_followup
    swapped = sim.spine.array.copy()
    swapped[sim.spine.array == L2] = L3
    swapped[sim.spine.array == L3] = L2
    result = register_spines(lumbar, sim.spine.with_array(swapped), levels=[L2, L3])
    assert not result.quality[L2].ok and not result.quality[L3].ok
    assert "disagree" in result.quality[L2].reason
    assert np.isnan(value(result.table, "L2", "volume_change"))


def test_empty_followup_mask_is_a_clear_error(verse004):
    empty = verse004.with_array(np.zeros_like(verse004.array))
    with pytest.raises(InputError, match="empty"):
        register_spines(verse004, empty)
    with pytest.raises(InputError, match="empty"):
        register_vertebra(verse004, empty, L1)


def test_lesion_growth_is_measured(verse004):
    verse004 = crop_to_levels(verse004, (L1, L2, L3))
    sim = simulate_followup(
        verse004, {L2: RigidMotion((3.0, 0.0, 0.0), (2.0, 0.0, 0.0))}, lesions=[Lesion(L2, 5.0, 8.0)]
    )
    result = register_spines(verse004, sim.spine, baseline_lesions=sim.baseline_lesions, followup_lesions=sim.lesions,
                             levels=[L2])  # fmt: skip
    grown = value(result.table, "L2", "lesion_volume_change")
    voxels = verse004.voxel_volume_mm3
    expected = (((sim.lesions.array == L2).sum()) - (sim.baseline_lesions.array == L2).sum()) * voxels
    assert grown == pytest.approx(expected)
    assert grown > 4 / 3 * np.pi * (8.0**3 - 5.0**3) * 0.7


@pytest.fixture(scope="module")
def phantom_pair():
    from spinekit.phantom import FollowupConfig, PhantomConfig, make_followup, make_phantom

    baseline = make_phantom(PhantomConfig(spacing=(2.0, 2.0, 2.0), levels="L1-L4", seed=3, field_of_view="spine"))
    followup = make_followup(
        baseline,
        FollowupConfig(seed=4, collapse={"L2": 0.4}, collapse_type="crush", per_level_rotation_deg=3.0,
                       per_level_translation_mm=3.0),
    )  # fmt: skip
    return baseline, followup


def test_phantom_pair_tre_and_height_loss(phantom_pair):
    baseline, followup = phantom_pair
    result = register_spines(
        baseline.spine, followup.spine, baseline_image=baseline.image, followup_image=followup.image
    )
    motions = followup.truth["followup"]["motions"]
    for label, name in ((L1, "L1"), (L2, "L2"), (L3, "L3")):
        truth = matrix_transform(motions[name]["matrix"])
        error = tre_mm(baseline.spine, label, result.registrations[label].transform, truth)
        assert error <= (2.0 if name == "L2" else 1.0), f"{name}: TRE {error:.2f} mm"


@pytest.fixture(scope="module")
def phantom_wedge_pair():
    """1.5 mm spine-field phantom, L2 wedged by 40 % anteriorly: the posterior wall and elements stay intact.

    (The phantom's crush also shortens the posterior elements, so it has no rigid truth for the whole vertebra:
    crush heights are tested on the verse004 simulation instead.)
    """
    from spinekit.phantom import FollowupConfig, PhantomConfig, make_followup, make_phantom

    baseline = make_phantom(PhantomConfig(spacing=(1.5, 1.5, 1.5), levels="L1-L3", seed=3, field_of_view="spine"))
    followup = make_followup(
        baseline,
        FollowupConfig(seed=4, collapse={"L2": 0.4}, collapse_type="wedge", per_level_rotation_deg=3.0,
                       per_level_translation_mm=3.0),
    )  # fmt: skip
    return baseline, followup, register_spines(baseline.spine, followup.spine)


def test_phantom_height_loss_within_one_mm(phantom_wedge_pair):
    baseline, followup, result = phantom_wedge_pair
    collapse = followup.truth["followup"]["collapse"]["L2"]
    for position in ("anterior", "middle", "posterior"):
        true_loss = collapse["heights_before_mm"][position] - collapse["heights_after_mm"][position]
        assert value(result.table, "L2", f"height_loss_{position}") == pytest.approx(true_loss, abs=1.0), position
        assert abs(value(result.table, "L1", f"height_loss_{position}")) < 1.0
    truth = matrix_transform(followup.truth["followup"]["motions"]["L2"]["matrix"])
    assert tre_mm(baseline.spine, L2, result.registrations[L2].transform, truth) <= 2.0


def test_phantom_intact_level_keeps_its_hu(phantom_pair):
    baseline, followup = phantom_pair
    result = register_spines(baseline.spine, followup.spine, baseline_image=baseline.image,
                             followup_image=followup.image, levels=[L1])  # fmt: skip
    # A pure motion leaves the trabecular HU of an intact level unchanged (noise only; a 1.5 mm inset on the 2 mm
    # grid read 34 HU here, from the cortex).
    truth = baseline.truth["vertebrae"]["L1"]["trabecular_hu"]
    assert value(result.table, "L1", "mean_hu_body_baseline") == pytest.approx(truth, abs=5.0)
    assert abs(value(result.table, "L1", "mean_hu_body_change")) < 5.0


def test_change_maps_show_the_local_collapse(phantom_wedge_pair):
    from spinekit.register.changemap import vertebra_change_maps

    baseline, followup, result = phantom_wedge_pair
    for label, low, high in ((L1, 0.95, 1.05), (L2, 0.0, 0.9)):
        maps = vertebra_change_maps(
            baseline.spine, followup.spine, label, result.registrations[label].transform,
            baseline_image=baseline.image, followup_image=followup.image,
        )  # fmt: skip
        body = baseline.spine.with_array(result.body_masks[label].astype(np.uint8)).to_sitk()
        on_crop = sitk.Resample(body, maps.jacobian.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        jacobian = float(np.median(maps.jacobian.array[sitk.GetArrayViewFromImage(on_crop) > 0]))
        assert low <= jacobian <= high, f"level {label}: median Jacobian in the body {jacobian:.3f}"
        # After alignment the intensities of the same bone agree up to noise (CT noise SD 12 HU, two scans).
        inside = sitk.GetArrayViewFromImage(on_crop) > 0
        assert abs(float(np.median(maps.difference.array[inside]))) < 10.0
        assert maps.seconds < 10.0
    true_change = 100.0 * ((followup.spine.array == L2).sum() / (baseline.spine.array == L2).sum() - 1.0)
    from spinekit.register.changemap import change_map_rows

    rows = {r.metric: r.value for r in change_map_rows(maps, baseline.spine, result.body_masks[L2])}
    assert rows["deformable_vertebra_volume_change_percent"] == pytest.approx(true_change, abs=2.0)


def test_cli_writes_transforms_table_and_maps(phantom_pair, tmp_path):
    import pandas as pd

    from spinekit.cli import main

    baseline, followup = phantom_pair
    baseline.write(tmp_path / "base")
    followup.write(tmp_path / "follow")
    out = tmp_path / "out"
    code = main([
        "register", "--baseline", str(tmp_path / "base" / "image.nii.gz"),
        "--baseline-spine", str(tmp_path / "base" / "spine.nii.gz"),
        "--followup", str(tmp_path / "follow" / "image.nii.gz"),
        "--followup-spine", str(tmp_path / "follow" / "spine.nii.gz"),
        "--out", str(out), "--levels", "L1-L2", "--change-maps", "--subject", "p1",
    ])  # fmt: skip
    assert code == 0
    for name in ("L1", "L2"):
        transform = sitk.ReadTransform(str(out / f"{name}_followup_to_baseline.tfm"))
        assert transform.GetDimension() == 3
        for prefix in ("followup_in_baseline_", "change_jacobian_", "change_difference_"):
            assert (out / f"{prefix}{name}.nii.gz").is_file(), prefix + name
    table = pd.read_csv(out / "changes.csv")
    assert list(table.columns[:8]) == ["subject", "structure", "label", "metric", "value", "unit", "method", "reason"]
    assert set(table["structure"]) >= {"L1", "L2"} and (table["subject"] == "p1").all()
    assert {"height_loss_anterior", "mean_hu_body_change", "deformable_body_volume_change_percent"} <= set(
        table["metric"]
    )
    # The file's transform is the one that brings the follow-up onto the baseline: truth within 1 mm at L1.
    truth = matrix_transform(followup.truth["followup"]["motions"]["L1"]["matrix"])
    written = sitk.ReadTransform(str(out / "L1_followup_to_baseline.tfm"))
    assert tre_mm(baseline.spine, L1, written, truth) <= 1.0


def test_ct_baseline_mri_followup(tmp_path):
    from spinekit.phantom import FollowupConfig, PhantomConfig, make_followup, make_phantom
    from spinekit.register.cli import run_register

    baseline = make_phantom(PhantomConfig(spacing=(2.0, 2.0, 2.0), levels="L1-L3", seed=5, field_of_view="spine"))
    followup = make_followup(baseline, FollowupConfig(seed=6, modality="t1", per_level_rotation_deg=3.0))
    baseline.write(tmp_path / "base")
    followup.write(tmp_path / "follow")
    run_register(
        tmp_path / "base" / "image.nii.gz", tmp_path / "base" / "spine.nii.gz", tmp_path / "follow" / "image.nii.gz",
        tmp_path / "out", followup_spine=tmp_path / "follow" / "spine.nii.gz", levels=[L1, L2],
    )  # fmt: skip
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "changes.csv")
    hu = table[table["metric"] == "mean_hu_body_change"]
    assert hu["value"].isna().all() and hu["reason"].str.contains("different modalities").all()
    assert (table[table["metric"] == "registration_ok"]["value"] == 1.0).all()
    for name, label in (("L1", L1), ("L2", L2)):
        truth = matrix_transform(followup.truth["followup"]["motions"][name]["matrix"])
        written = sitk.ReadTransform(str(tmp_path / "out" / f"{name}_followup_to_baseline.tfm"))
        assert tre_mm(baseline.spine, label, written, truth) <= 1.0


def test_labels_shifted_by_one_level_are_flagged(verse_followup):
    from spinekit.register.quality import level_shift

    lumbar, sim, result = verse_followup
    assert level_shift(lumbar, sim.spine)[0] == 0
    shifted = np.where(sim.spine.array > 0, sim.spine.array - 1, 0).astype(sim.spine.array.dtype)
    shift, mismatch = level_shift(lumbar, sim.spine.with_array(shifted))
    assert shift == -1 and mismatch[-1] < 0.5 * mismatch[0], mismatch
    # The neighbour check alone passes such a follow-up; the shape check flags every level.
    result = register_spines(lumbar, sim.spine.with_array(shifted), levels=[L2])
    for report in result.quality.values():
        assert not report.ok and "shifted by one level" in report.reason
    assert np.isnan(value(result.table, "L2", "height_loss_middle"))


def test_ct_lumbar_3mm_with_image(shared_data):
    """Real CT and its TotalSegmentator labels (3 mm): a simulated follow-up image and labels, L2 crushed 30 %.

    The follow-up body is cut by the baseline body's plane and the simulation compresses exactly what lies in front
    of it, so the truth (0.3 x the baseline height) and the measurement share one body. What is left is the 3 mm
    grid: a label map quantises each endplate by up to half a voxel, which the plane fits average only when the
    endplate is tilted against the grid. Over eight motion seeds with the true transforms, 5 of 72 height errors
    (collapsed L2 and intact L1/L3) exceed 1 mm, the largest 2.0 mm, so 1.5 mm is asserted here (verse004 at
    1 x 1 x 2 mm and the 1.5 mm phantom are held to 1 mm).
    """
    from spinekit.io import read_volume
    from spinekit.label_import import convert_labels

    folder = shared_data / "ct_lumbar_3mm"
    ct = read_volume(folder / "ct.nii.gz")
    spine = convert_labels(read_labels(folder / "totalseg_total_fast.nii.gz"), "totalsegmentator").spine
    spine = spine.with_array(np.where((spine.array >= 18) & (spine.array <= 24), spine.array, 0).astype(np.int16))
    levels = [18, 19, 20, 21, 22, 23, 24]
    motions = random_motions(levels, np.random.default_rng(11), max_rotation_deg=10.0, max_translation_mm=15.0)
    sim = simulate_followup(spine, motions, image=ct, collapses=[Collapse(L2, 0.3)])
    result = register_spines(spine, sim.spine, baseline_image=ct, followup_image=sim.image, levels=[L1, L2, L3])
    for label, name in ((L1, "L1"), (L2, "L2"), (L3, "L3")):
        error = tre_mm(spine, label, result.registrations[label].transform, sim.transforms[label])
        assert error <= (2.0 if label == L2 else 1.0), f"{name}: TRE {error:.2f} mm"
        assert result.quality[label].ok, result.quality[label].reason
        # The same CT carried by a rigid motion: the trabecular HU must not change (interpolation only).
        assert abs(value(result.table, name, "mean_hu_body_change")) < 5.0
    for position in ("anterior", "middle", "posterior"):
        assert abs(value(result.table, "L1", f"height_loss_{position}")) < 1.0
        expected = 0.3 * value(result.table, "L2", f"height_{position}_baseline")
        assert value(result.table, "L2", f"height_loss_{position}") == pytest.approx(expected, abs=1.5), position
