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
    motions = {L3: RigidMotion((4.0, -6.0, 5.0), (8.0, -9.0, 6.0))}
    sim = simulate_followup(verse004, motions, collapses=[Collapse(L3, 0.4, anchor=-1.0)])
    whole = register_vertebra(verse004, sim.spine, L3, config=RegistrationConfig(changed_body_fraction=1.0))
    ours = register_vertebra(verse004, sim.spine, L3)
    error = tre_mm(verse004, L3, ours.transform, sim.transforms[L3])
    assert error <= 1.0
    # The whole-vertebra fit is pulled by the collapsed endplate: the posterior-element fit is what makes it work.
    assert tre_mm(verse004, L3, whole.transform, sim.transforms[L3]) > error + 0.5


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
    result = register_spines(lumbar, sim.spine.with_array(swapped), levels=[L1, L2, L3, L4])
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
    sim = simulate_followup(
        verse004, {L2: RigidMotion((3.0, 0.0, 0.0), (2.0, 0.0, 0.0))}, lesions=[Lesion(L2, 5.0, 8.0)]
    )
    result = register_spines(verse004, sim.spine, baseline_lesions=sim.baseline_lesions, followup_lesions=sim.lesions,
                             levels=[L1, L2, L3])  # fmt: skip
    grown = value(result.table, "L2", "lesion_volume_change")
    voxels = verse004.voxel_volume_mm3
    expected = (((sim.lesions.array == L2).sum()) - (sim.baseline_lesions.array == L2).sum()) * voxels
    assert grown == pytest.approx(expected)
    assert grown > 4 / 3 * np.pi * (8.0**3 - 5.0**3) * 0.7


@pytest.fixture(scope="module")
def phantom_pair():
    from spinekit.phantom import FollowupConfig, PhantomConfig, make_followup, make_phantom

    baseline = make_phantom(PhantomConfig(spacing=(2.0, 2.0, 2.0), levels="L1-L4", seed=3))
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


@pytest.mark.xfail(
    reason="known: on the 2 mm phantom the posterior-element fit of the 40 % crushed L2 keeps ~2 deg of tilt, "
    "which skews anterior/posterior height loss by up to 2 mm (middle is within 1 mm)",
    strict=False,
)
def test_phantom_height_loss_within_one_mm(phantom_pair):
    baseline, followup = phantom_pair
    result = register_spines(baseline.spine, followup.spine, levels=[L1, L2, L3])
    collapse = followup.truth["followup"]["collapse"]["L2"]
    for position in ("anterior", "middle", "posterior"):
        true_loss = collapse["heights_before_mm"][position] - collapse["heights_after_mm"][position]
        assert value(result.table, "L2", f"height_loss_{position}") == pytest.approx(true_loss, abs=1.0)


@pytest.mark.xfail(
    reason="known: 34 HU apparent change in intact L1 on the 2 mm phantom, not yet explained", strict=False
)
def test_phantom_intact_level_keeps_its_hu(phantom_pair):
    baseline, followup = phantom_pair
    result = register_spines(baseline.spine, followup.spine, baseline_image=baseline.image,
                             followup_image=followup.image, levels=[L1])  # fmt: skip
    # A pure motion leaves the trabecular HU of an intact level unchanged (noise only).
    assert abs(value(result.table, "L1", "mean_hu_body_change")) < 15.0
