"""Rib-bearing vertebrae on CT, and what they tell about the level count.

With 12 rib pairs, T12 is the lowest vertebra that carries ribs. Ribs are found from the CT itself, without a rib
class in our networks: bone (HU >= :data:`RIB_MIN_HU`) outside every spine label that touches a vertebra at the back
of its body (not in front, where a contrast-filled aorta lies) and runs far out laterally, which no transverse process
does. The heads of ribs 11 and 12 articulate with their own vertebra's body only (Standring 2020, Gray's Anatomy),
so the vertebra a rib touches most is the one that bears it.

What the ribs then say (``check_levels``), never relabelling a sacrum-counted spine silently:

- Levels counted from the sacrum, T12 with ribs and L1 without: the count is confirmed (no ``transitional_unverified``).
- A rib on a vertebra counted as lumbar: flag ``rib_on_lumbar`` (a lumbar rib, 13 rib pairs, or a lumbosacral
  transitional vertebra counted as L5; Carrino et al. 2011, Radiology 259:196).
- T11 with ribs but T12 without: flag ``no_rib_on_T12`` (11 rib pairs, or six lumbar-type vertebrae; Carrino 2011).
- No sacrum in view: the lowest rib-bearing vertebra above a rib-less one is numbered T12 and the rest counted from
  it (counting from the lowest rib, the practice when the sacrum is out of view; Hughes & Saifuddin 2006, AJR
  187:W59), flagged ``levels_from_ribs`` because it assumes 12 rib pairs.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from spinekit import labels as lb
from spinekit.io import Volume, resample_like
from spinekit.segment.instances import InstanceResult, coords_mm

#: Bone threshold (HU): lower-rib cortex and marrow at 1-3 mm voxels stay above it, soft tissue and contrast-free
#: vessels below it (trabecular bone 100-300 HU; Schreiber et al. 2011, J Bone Joint Surg Am 93:1057).
RIB_MIN_HU = 150.0
#: A rib head touches its vertebra within this gap (mm): the costovertebral joint space, blurred at 3 mm voxels.
RIB_CONTACT_MM = 6.0
#: A rib reaches at least this far (mm) from the body's midline sideways: lumbar transverse-process tips end
#: 35-45 mm from it (L3, the longest: about 80-90 mm tip to tip; Standring 2020), a 12th rib goes on to 70-150 mm.
RIB_MIN_LATERAL_MM = 50.0
#: Rib heads meet the body at its posterolateral corner and the transverse process (Standring 2020), 3-20 mm behind
#: the centre of the whole vertebra (phantoms and ../shared/data/ct_lumbar_3mm); bright parts meeting the vertebra
#: farther forward are vessels (a contrast-filled aorta on the front of the bodies, with its renal branches).
RIB_HEAD_MAX_FORWARD_MM = 10.0
#: Smaller bone parts are transverse-process fragments or noise, not ribs (mm^3; a 12th rib is 2-10 cm^3).
RIB_MIN_MM3 = 500.0
#: Larger parts are pelvis or rib cage fused at a joint, not one rib (mm^3).
RIB_MAX_MM3 = 80_000.0


def _distance_near(mask: np.ndarray, spacing_kji: tuple[float, ...], reach_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) to ``mask`` and the index of its nearest voxel, exact within ``reach_mm`` and inf beyond.

    The transform runs in the box around ``mask`` grown by ``reach_mm``: every voxel that near has its nearest mask
    voxel inside that box, and the box is a small part of a CT's field of view.
    """
    gap = np.full(mask.shape, np.inf)
    nearest = np.zeros((mask.ndim, *mask.shape), dtype=np.intp)
    if not mask.any():
        return gap, nearest
    grow = [int(np.ceil(reach_mm / s)) + 1 for s in spacing_kji]
    where = np.nonzero(mask)
    low = [max(int(c.min()) - g, 0) for c, g in zip(where, grow, strict=True)]
    high = [min(int(c.max()) + g + 1, n) for c, g, n in zip(where, grow, mask.shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    gap[box], indices = ndimage.distance_transform_edt(~mask[box], sampling=spacing_kji, return_indices=True)
    nearest[(slice(None), *box)] = indices + np.asarray(low).reshape(-1, 1, 1, 1)
    return gap, nearest


def rib_sides(spine: Volume, hounsfield: Volume) -> dict[int, set[str]]:
    """Vertebra label -> the sides ("left", "right") on which a rib articulates; CT in HU on the spine's grid.

    ``spine`` holds our labels on an axis-aligned LPS grid (array axes k, j, i; the network grid).
    """
    array = spine.array
    spacing_kji = tuple(spine.spacing[::-1])
    vertebra = lb.vertebra_mask(array)
    if not vertebra.any():
        return {}
    gap, nearest = _distance_near(vertebra, spacing_kji, RIB_CONTACT_MM)
    sacrum = array == lb.SACRUM
    near_sacrum = _distance_near(sacrum, spacing_kji, RIB_CONTACT_MM)[0] <= RIB_CONTACT_MM
    bone = (hounsfield.array >= RIB_MIN_HU) & (array == 0)
    parts, _ = ndimage.label(bone, np.ones((3, 3, 3)))
    touching = np.unique(parts[(gap <= RIB_CONTACT_MM) & (parts > 0)])
    voxel = spine.voxel_volume_mm3
    out: dict[int, set[str]] = {}
    for index in touching:
        part = parts == index
        if not RIB_MIN_MM3 <= part.sum() * voxel <= RIB_MAX_MM3 or (part & near_sacrum).any():
            continue
        contact = part & (gap <= RIB_CONTACT_MM)
        owners = array[tuple(nearest[:, contact])]
        owner = int(np.bincount(owners).argmax())
        centre = coords_mm(spine, array == owner).mean(axis=0)
        dx = coords_mm(spine, part)[:, 0] - centre[0]
        lateral = dx[np.argmax(np.abs(dx))]
        behind = coords_mm(spine, contact)[:, 1].mean() - centre[1]  # LPS +y = posterior
        if abs(lateral) >= RIB_MIN_LATERAL_MM and behind >= -RIB_HEAD_MAX_FORWARD_MM:
            out.setdefault(owner, set()).add("left" if lateral > 0 else "right")  # LPS +x = patient left
    return out


def _flag(name: str, detail: str) -> dict:
    return {"flag": name, "detail": detail}


def check_levels(instances: InstanceResult, hounsfield: Volume) -> tuple[InstanceResult, dict[str, list[str]]]:
    """The instance result checked (with a sacrum) or numbered (without one) by its rib-bearing vertebrae, and the
    rib sides found per vertebra name. ``hounsfield``: the CT in HU on the instances' grid (see module docstring).
    """
    sides = rib_sides(instances.spine, hounsfield)
    if instances.levels_known:
        instances = replace(instances, flags=_checked_flags(instances, sides))
    else:
        numbered = _numbered_from_ribs(instances, sides)
        if numbered is not None:
            instances, mapping = numbered
            sides = {mapping[v]: s for v, s in sides.items()}
    found = {lb.VERTEBRA_NAMES.get(v, str(v)): sorted(s) for v, s in sorted(sides.items())}
    return instances, found


def check_named_levels(
    spine: Volume, image: Volume, spacing_mm: float = 3.0
) -> tuple[list[dict], dict[str, list[str]]]:
    """Flags and rib sides for a spine whose levels another tool named (TotalSegmentator, nnU-Net), on CT in HU.

    Both go to a ``spacing_mm`` LPS grid first, as our own networks see them (the distance transforms stay small).
    """
    from spinekit.segment.inference import to_network_grid

    hounsfield = to_network_grid(image, spacing_mm)
    labels = resample_like(spine, hounsfield, is_label=True)
    levels = [v for v in lb.CRANIOCAUDAL_ORDER if (labels.array == v).any()]
    if not any(v != lb.SACRUM for v in levels):
        return [], {}
    instances, found = check_levels(InstanceResult(labels, levels=levels, levels_known=True), hounsfield)
    return instances.flags, found


def _checked_flags(instances: InstanceResult, sides: dict[int, set[str]]) -> list[dict]:
    """Flags of a sacrum-counted spine once its ribs are known (module docstring)."""
    flags = [f for f in instances.flags if f["flag"] != "transitional_unverified"]
    lumbar = [lb.VERTEBRA_NAMES[v] for v in sorted(sides) if 20 <= v <= 24]
    present = set(instances.levels)
    if lumbar:
        detail = (
            f"rib on {', '.join(lumbar)} as counted from the sacrum: a lumbar rib, 13 rib pairs or a lumbosacral "
            "transitional vertebra; levels kept as counted from the sacrum"
        )
        flags.append(_flag("rib_on_lumbar", detail))
    elif 19 in present and 19 not in sides and 18 in sides:
        detail = (
            "T11 bears ribs, T12 (counted from the sacrum) does not: 11 rib pairs or six lumbar-type vertebrae; "
            "levels kept as counted from the sacrum"
        )
        flags.append(_flag("no_rib_on_T12", detail))
    elif not (19 in sides and 20 in present):
        detail = "T12 with ribs above a rib-less L1 is not in view: L6/T13/11 rib pairs not checked"
        flags.append(_flag("transitional_unverified", detail))
    return flags


def _numbered_from_ribs(
    instances: InstanceResult, sides: dict[int, set[str]]
) -> tuple[InstanceResult, dict[int, int]] | None:
    """Unknown-level instances numbered from the lowest rib-bearing vertebra as T12, with the label mapping; None
    when no rib-bearing vertebra has a rib-less one below it in view, or the count runs past L5."""
    unknown = sorted(v for v in instances.levels if lb.is_unknown_vertebra(v))  # cranial first
    bearing = [v for v in unknown if v in sides]
    if not bearing or max(bearing) + 1 not in unknown:
        return None
    order = [v for v in lb.CRANIOCAUDAL_ORDER if v not in (lb.T13, lb.L6, lb.SACRUM)]
    positions = {v: order.index(19) + v - max(bearing) for v in unknown}
    if min(positions.values()) < 0 or max(positions.values()) >= len(order):
        return None
    mapping = {v: order[p] for v, p in positions.items()}
    array = instances.spine.array
    out = array.copy()
    for old, new in mapping.items():
        out[array == old] = new
    z_of = {v: coords_mm(instances.spine, array == v)[:, 2].mean() for v in unknown}  # LPS +z = superior
    for disc in [int(v) for v in np.unique(array) if lb.is_unknown_disc(int(v))]:
        z = coords_mm(instances.spine, array == disc)[:, 2].mean()
        above = [v for v in unknown if z_of[v] > z]
        below = [v for v in unknown if z_of[v] <= z]
        upper = mapping[max(above)] if above else order[order.index(mapping[min(below)]) - 1]
        out[array == disc] = lb.disc_label(upper)
    flags = [f for f in instances.flags if f["flag"] not in ("levels_unknown", "transitional_unverified")]
    flags.append(
        _flag("levels_from_ribs", "no sacrum in view: the lowest rib-bearing vertebra numbered T12 (12 rib pairs)")
    )
    flags.append(_flag("transitional_unverified", "no sacrum in view: L6/T13 not checked"))
    numbered = replace(
        instances,
        spine=instances.spine.with_array(out),
        levels=[mapping.get(v, v) for v in instances.levels],
        levels_known=True,
        flags=flags,
        volumes_mm3={mapping.get(v, v): vol for v, vol in instances.volumes_mm3.items()},
    )
    return numbered, mapping
