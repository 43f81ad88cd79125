"""Rib-bearing vertebrae on CT (spinekit.segment.ribs): phantoms with known ribs, and the real lumbar CT."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from spinekit import labels as lb
from spinekit.errors import InputError
from spinekit.io import read_labels, read_volume
from spinekit.label_import import TS_RIB_LABELS, convert_labels
from spinekit.phantom import Phantom, PhantomConfig, make_phantom
from spinekit.segment.dataset import spine_targets
from spinekit.segment.instances import assign_instances
from spinekit.segment.ribs import check_levels, rib_sides

T11, T12, L1 = 18, 19, 20


@cache
def rib_phantom(levels: str, rib_levels: tuple[str, ...], transitional: str | None = None) -> Phantom:
    config = PhantomConfig(
        levels=levels, rib_levels=rib_levels, transitional=transitional, spacing=(2.0, 2.0, 2.0), seed=3
    )
    return make_phantom(config)


def counted(phantom: Phantom):
    """Instances and levels from the phantom's true semantic classes (as the network would ideally give them)."""
    return assign_instances(phantom.spine.with_array(spine_targets(phantom.spine.array)))


def flags(instances) -> set[str]:
    return {f["flag"] for f in instances.flags}


@pytest.mark.parametrize(
    "rib_levels, expected",
    [(("T11", "T12"), {T11, T12}), (("T12", "L1"), {T12, L1}), (("T11",), {T11}), ((), set())],
)
def test_ribs_found_on_the_vertebrae_that_bear_them(rib_levels, expected):
    phantom = rib_phantom("T11-S1", rib_levels)
    sides = rib_sides(phantom.spine, phantom.image)
    assert set(sides) == expected  # () : the transverse processes (12-24 mm long) are never taken for ribs
    assert all(s == {"left", "right"} for s in sides.values())


def test_one_sided_rib_is_reported_on_its_side():
    phantom = rib_phantom("T11-S1", ("T11", "T12"))
    image = phantom.image.array.copy()
    assert np.allclose(phantom.image.direction, np.eye(3))  # array axis i runs along LPS +x (patient left)
    x = phantom.image.origin[0] + phantom.image.spacing[0] * np.arange(image.shape[2])
    far_left = x > phantom.model.vertebrae["T12"].pose.origin[0] + 40
    image[:, :, far_left] = np.minimum(image[:, :, far_left], 40)  # bone far left of the spine becomes muscle
    sides = rib_sides(phantom.spine, phantom.image.with_array(image))
    assert sides == {T11: {"right"}, T12: {"right"}}


def test_contrast_filled_aorta_with_renal_branch_is_not_a_rib():
    phantom = rib_phantom("T11-S1", ())
    image = phantom.image.array.copy()
    vertebra = phantom.model.vertebrae["L2"]
    centre = vertebra.pose.origin  # LPS centre of the L2 body
    k, j, i = np.indices(image.shape)
    x, y, z = phantom.image.index_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float)).T.reshape(
        3, *image.shape
    )
    aorta_x, aorta_y = centre[0] + 15, centre[1] - vertebra.depth / 2 - 11  # radius 11 mm, on the front of the bodies
    aorta = ((x - aorta_x) ** 2 + (y - aorta_y) ** 2 <= 11**2) & (np.abs(z - centre[2]) <= 70)
    renal = (np.abs(z - centre[2]) <= 3) & (np.abs(y - aorta_y) <= 3) & (x >= aorta_x) & (x <= aorta_x + 90)
    image[(aorta | renal) & (image < 250)] = 250  # arterial-phase contrast, 90 mm out to the left kidney
    assert rib_sides(phantom.spine, phantom.image.with_array(image)) == {}


def test_normal_count_is_confirmed_by_the_ribs():
    phantom = rib_phantom("T11-S1", ("T11", "T12"))
    instances, found = check_levels(counted(phantom), phantom.image)
    assert found == {"T11": ["left", "right"], "T12": ["left", "right"]}
    assert instances.levels_known and "transitional_unverified" not in flags(instances)
    assert instances.levels == counted(phantom).levels  # nothing relabelled


def test_lumbar_rib_is_flagged_not_relabelled():
    phantom = rib_phantom("T11-S1", ("T11", "T12", "L1"))
    before = counted(phantom)
    instances, found = check_levels(before, phantom.image)
    assert "L1" in found and "rib_on_lumbar" in flags(instances)
    assert np.array_equal(instances.spine.array, before.spine.array)


def test_six_lumbar_type_vertebrae_are_flagged():
    # L6: counting from the sacrum calls the real T12 "T11" and the real L1 "T12", which has no ribs
    phantom = rib_phantom("T11-S1", ("T11", "T12"), transitional="L6")
    instances, found = check_levels(counted(phantom), phantom.image)
    assert set(found) == {"T10", "T11"}
    assert "no_rib_on_T12" in flags(instances)


def test_levels_counted_from_the_lowest_rib_without_a_sacrum():
    phantom = rib_phantom("T10-L3", ("T10", "T11", "T12"))
    before = counted(phantom)
    assert not before.levels_known
    instances, found = check_levels(before, phantom.image)
    assert instances.levels_known and "levels_from_ribs" in flags(instances)
    assert "levels_unknown" not in flags(instances)
    assert set(found) == {"T10", "T11", "T12"}
    truth, spine = phantom.spine.array, instances.spine.array
    for level in (17, 18, 19, 20, 21, 22):  # T10-L3: every vertebra and the disc below it gets its true label
        assert np.mean(spine[truth == level] == level) > 0.95, lb.VERTEBRA_NAMES[level]
    for disc in (lb.disc_label(v) for v in (17, 18, 19, 20, 21)):
        assert np.mean(spine[truth == disc] == disc) > 0.95, disc
    assert sorted(instances.volumes_mm3) == sorted(instances.levels)


def test_no_count_from_ribs_when_no_ribless_vertebra_is_in_view():
    phantom = rib_phantom("T9-T12", ("T9", "T10", "T11", "T12"))
    before = counted(phantom)
    instances, _ = check_levels(before, phantom.image)
    assert not instances.levels_known and "levels_unknown" in flags(instances)
    assert np.array_equal(instances.spine.array, before.spine.array)


def test_rib_level_must_be_in_the_phantom():
    with pytest.raises(InputError, match="rib level"):
        make_phantom(PhantomConfig(levels="L1-S1", rib_levels=("T12",)))


def test_real_ct_twelfth_ribs(shared_data):
    """ct_lumbar_3mm: TotalSegmentator labels both 12th ribs there; both must be found on T12, nothing else."""
    folder = shared_data / "ct_lumbar_3mm"
    ts = read_labels(folder / "totalseg_total_fast.nii.gz")
    twelfth = {side for side, labels in TS_RIB_LABELS.items() if (ts.array == labels[11]).any()}
    assert twelfth == {"left", "right"}
    sides = rib_sides(convert_labels(ts, "totalsegmentator").spine, read_volume(folder / "ct.nii.gz"))
    assert sides == {T12: twelfth}


def test_training_phantoms_get_valid_ribs():
    from spinekit.phantom.config import validate
    from spinekit.segment.train import random_rib_levels

    rng = np.random.default_rng(0)
    with_t12 = 0
    for _ in range(40):
        for levels, transitional in (("T10-S1", None), ("T8-L2", "T13"), ("T11-L5", "L6"), ("L1-S1", None)):
            ribs = random_rib_levels(levels, transitional, rng)
            validate(PhantomConfig(levels=levels, transitional=transitional, rib_levels=ribs))  # raises if invalid
            with_t12 += levels == "T10-S1" and "T12" in ribs
    assert 28 <= with_t12 <= 40  # T12 keeps its ribs in about 9 of 10 phantoms


def test_phantom_ribs_are_bone_in_the_image_only():
    with_ribs, without = rib_phantom("T11-S1", ("T11", "T12")), rib_phantom("T11-S1", ())
    assert np.array_equal(with_ribs.spine.array, without.spine.array)  # no spine label on a rib
    rib = (with_ribs.image.array >= 150) & (without.image.array < 150)
    rib_mm3 = rib.sum() * with_ribs.image.voxel_volume_mm3
    # four tubes of radius 4 mm and about 130 mm: 4 x pi x 16 x 130 = 26 cm^3, less where they meet the vertebra
    assert 18_000 < rib_mm3 < 30_000
    assert not (with_ribs.muscles.array[rib] > 0).any()  # a rib displaces muscle


def test_levels_named_by_another_tool_are_checked_against_the_ribs(shared_data):
    from spinekit.segment.ribs import check_named_levels

    folder = shared_data / "ct_lumbar_3mm"
    spine = convert_labels(read_labels(folder / "totalseg_total_fast.nii.gz"), "totalsegmentator").spine
    image = read_volume(folder / "ct.nii.gz")
    flags, found = check_named_levels(spine, image)
    assert found == {"T12": ["left", "right"]} and not flags  # TotalSegmentator's own names: checked, consistent
    shifted = spine.array.copy()
    for level in range(24, 18, -1):  # a tool that calls T12 "L1" (and L5 "L6")
        shifted[spine.array == level] = level + 1
    flags, found = check_named_levels(spine.with_array(shifted), image)
    assert found == {"L1": ["left", "right"]} and "rib_on_lumbar" in {f["flag"] for f in flags}
