"""The sacral base found from disc inclination when rudimentary sacral discs extend the chain (MRI)."""

from __future__ import annotations

import numpy as np

from spinekit import labels as lb
from spinekit.io import Volume
from spinekit.segment.instances import DISC, VERTEBRA, assign_instances, components, sacral_remnants

SPACING = 2.0
DISC_Z_MM = (220, 190, 160, 130, 100, 70, 45, 22)  # cranial first; 70 = the most caudal lumbar-sized disc


def column(tilts_deg: list[float], heights_mm: list[float]) -> Volume:
    """Semantic map of a straight column of bone (radius 18 mm) cut by discs of given inclination and height."""
    k, j, i = np.meshgrid(*(np.arange(n) * SPACING for n in (125, 40, 40)), indexing="ij")
    y, x = j - 40.0, i - 40.0
    inside = (x**2 + y**2 <= 18**2) & (k >= 10) & (k <= 240)
    array = np.where(inside, VERTEBRA, 0).astype(np.uint8)
    for z, tilt, height in zip(DISC_Z_MM, tilts_deg, heights_mm, strict=True):
        t = np.radians(tilt)
        across = y * np.sin(t) + (k - z) * np.cos(t)  # distance from the disc's mid-plane (normal in the y-z plane)
        array[inside & (np.abs(across) <= height / 2)] = DISC
    return Volume(array, spacing=(SPACING,) * 3)


def test_thin_discs_below_the_most_inclined_one_are_sacral():
    semantic = column([3, 4, 5, 6, 8, 30, 12, 8], [8, 8, 8, 8, 8, 8, 4, 4])
    discs = components(semantic.array == DISC, semantic.voxel_volume_mm3, 300.0)
    discs.sort(key=lambda m: -np.argwhere(m)[:, 0].mean())
    assert len(discs) == 8 and sacral_remnants(semantic, discs) == 2
    result = assign_instances(semantic)
    assert result.levels_known and "sacrum_inferred" in {f["flag"] for f in result.flags}
    spine = result.spine.array
    z_of = {v: np.argwhere(spine == v)[:, 0].mean() * SPACING for v in np.unique(spine) if v}
    assert abs(z_of[lb.disc_label(24)] - 70) < 3  # the inclined disc is L5/S1
    assert 70 < z_of[24] < 100 and z_of[lb.SACRUM] < 70  # L5 above it, the sacrum below
    below_base = spine[: int(55 / SPACING)]
    assert not ((below_base > lb.DISC_OFFSET) & (below_base < lb.DISC_OFFSET + 30)).any()  # no sacral disc left


def test_a_smooth_curve_is_not_cut():
    semantic = column([30, 26, 22, 18, 14, 10, 6, 2], [8] * 8)  # kyphosis-like: inclination changes gradually
    discs = components(semantic.array == DISC, semantic.voxel_volume_mm3, 300.0)
    assert sacral_remnants(semantic, sorted(discs, key=lambda m: -np.argwhere(m)[:, 0].mean())) == 0
    assert not assign_instances(semantic).levels_known  # no sacrum in view: levels stay unknown


def test_full_size_discs_below_are_not_sacral():
    semantic = column([3, 4, 5, 6, 8, 30, 12, 8], [8] * 8)  # a lordotic L4/L5 step, then lumbar-sized discs
    discs = components(semantic.array == DISC, semantic.voxel_volume_mm3, 300.0)
    assert sacral_remnants(semantic, sorted(discs, key=lambda m: -np.argwhere(m)[:, 0].mean())) == 0


def test_a_disc_off_the_column_axis_is_not_chained():
    """A disc-like blob 30 mm below and 30 mm in front of the lowest disc (prevertebral tissue) stays out of the chain:
    45 deg off the column axis; 12-60 mm away and caudal, it passed the distance rules alone."""
    from spinekit.segment.instances import disc_chain

    semantic = column([-3, -4, -5, -6, -8, -10, -12, -8], [8] * 8)  # lordosis: the lower discs face forward
    array = semantic.array.copy()
    array[: int(60 / SPACING)][array[: int(60 / SPACING)] == DISC] = VERTEBRA  # keep the six discs z >= 70 mm
    array[19:22, 1:10, 15:26] = DISC  # z 38-42 mm, y -38..-22 mm (anterior), x -10..10 mm: 1.8 cm3
    semantic = semantic.with_array(array)
    discs = components(array == DISC, semantic.voxel_volume_mm3, 300.0)
    assert len(discs) == 7
    chain = disc_chain(semantic, discs)
    lowest_z = min(np.argwhere(d)[:, 0].mean() * SPACING for d in chain)
    assert len(chain) == 6 and abs(lowest_z - 70) < 3
