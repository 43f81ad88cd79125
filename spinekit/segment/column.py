"""Anatomical clean-up of the spine network's semantic classes before instances: one column, no pelvis, CT bone only.

A small network confuses bowel, pelvis and ribs with vertebrae (its errors on ../shared/data/ct_lumbar_3mm are mostly
iliac wings and bowel). Three rules from anatomy remove them without touching the column:

1. One column: the spine (vertebra, sacrum, disc, canal) is one connected structure around the canal; other
   components go.
2. Lateral extent: every vertebra lies within a half-width of the column axis (the canal, or the bone centre where no
   canal is seen). Lumbar transverse processes span 70-95 mm tip to tip (Panjabi et al. 1992, Spine 17:299, L3 the
   widest), so 50 mm half-width keeps them; the sacral alae span ~100-115 mm (Peretz et al. 1998, Spine 23:1524),
   so sacrum keeps 62 mm. Iliac wings and rib shafts lie farther out.
3. On CT, bone is dense: trabecular vertebral bone is above ~100 HU in adults and rarely under 0 HU even in severe
   osteoporosis (QCT vBMD 50 mg/cm^3 is about 50-70 HU; Link & Lang 2014, Curr Osteoporos Rep 12:22), so predicted
   bone under ``MIN_BONE_HU`` is soft tissue or gas; bone-dense voxels touching the column inside its half-width are
   added (the network misses the dense shell at 3 mm). Discs (55-125 HU in the reference CT) are left to the network.

Sacrum predicted cranial to the lowest disc of the column is a mislabelled vertebra and becomes vertebra.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spinekit.io import Volume
from spinekit.postprocess import largest_component
from spinekit.segment import qc
from spinekit.segment.instances import MIN_DISC_MM3, components, disc_chain

VERTEBRA, SACRUM, DISC, CANAL = 1, 2, 3, 4
#: Half-widths (mm, left-right from the column axis) of vertebrae and sacrum; see the module docstring.
VERTEBRA_HALF_WIDTH_MM = 50.0
SACRUM_HALF_WIDTH_MM = 62.0
#: Lumbar discs are 45-55 mm wide (Zhou et al. 2000, Eur Spine J 9:242): disc voxels over 35 mm off-axis are not disc.
DISC_HALF_WIDTH_MM = 35.0
#: Discs on CT: soft tissue of 55-125 HU (5th-95th percentile in the reference CT), widened for partial volume at the
#: endplates; lumbar discs are 8-12 mm high (Zhou et al. 2000) and their bodies ~45-50 mm wide (Panjabi 1992).
DISC_HU = (0.0, 220.0)
DISC_HALF_HEIGHT_MM = 7.0
DISC_RADIUS_MM = 28.0
#: A disc voxel has bone within this distance (mm) above and below it along the disc normal.
SANDWICH_MM = 12.0
#: Canal voxels within this distance (mm) of the previous slice's centre belong to the canal: the lumbar canal is
#: 15-25 mm wide (Panjabi et al. 1992), so a 10 mm radius holds it and excludes a branch beside it.
CANAL_RADIUS_MM = 10.0
#: Predicted bone below this (HU, lightly smoothed) is not bone; see the module docstring.
MIN_BONE_HU = 0.0
#: Voxels at or above this (HU) next to the column are bone the network missed (cortex and dense trabeculae).
BONE_GROW_HU = 150.0
#: Growth of missed bone stays within this distance (mm) of the network's bone.
BONE_GROW_MM = 15.0
#: Soft voxels enclosed by bone on an axial slice are marrow when above this (HU): fatty marrow of the elderly is
#: 30-100 HU at 3 mm, the canal's CSF and epidural fat below it.
MARROW_HU = 40.0
#: Gaps in the thin cortex at 3 mm (voxels, axial closing) bridged before marrow is filled.
MARROW_CLOSING = 2


def column_axis_x(volume: Volume, classes: np.ndarray) -> np.ndarray:
    """Left-right position (mm, LPS x) of the column axis on every axial slice.

    The canal is tracked slice by slice from the middle of its largest component outwards (mean shift, Comaniciu &
    Meer 2002): each slice's centre is the mean of the canal voxels within ``CANAL_RADIUS_MM`` of the previous
    centre, so a false branch (nerve root, a blob merged into the canal) does not pull the axis sideways; slices
    without canal near the track keep the last centre (the sacral canal continues the lumbar canal in line).
    Without any canal, the centre of all spine classes per slice is used. ``volume`` must be on an axis-aligned
    LPS grid (array axis 0 = I-S).
    """
    x_mm = volume.origin[0] + volume.spacing[0] * np.arange(classes.shape[2])
    y_mm = volume.origin[1] + volume.spacing[1] * np.arange(classes.shape[1])
    canal = classes == CANAL
    if not canal.any():
        count = (classes > 0).sum(axis=1)
        seen = count.sum(axis=1) > 0
        centres = np.full(classes.shape[0], float(x_mm.mean()))
        centres[seen] = (count[seen] * x_mm).sum(axis=1) / count[seen].sum(axis=1)
        return centres
    tube = largest_component(canal)  # the canal is one tube: start in the middle of its largest component
    slices = np.flatnonzero(tube.any(axis=(1, 2)))
    start = int(slices[len(slices) // 2])
    j, i = np.nonzero(tube[start])
    centre = np.array([x_mm[i].mean(), y_mm[j].mean()])
    centres = np.full(classes.shape[0], np.nan)
    centres[start] = centre[0]
    for direction in (1, -1):
        current = centre.copy()
        for k in range(start + direction, classes.shape[0] if direction > 0 else -1, direction):
            j, i = np.nonzero(canal[k])
            points = np.stack([x_mm[i], y_mm[j]], axis=1)
            near = points[np.linalg.norm(points - current, axis=1) <= CANAL_RADIUS_MM]
            if len(near):
                current = near.mean(axis=0)
            centres[k] = current[0]
    return centres


def column_component(semantic: Volume, classes: np.ndarray, midline_x: np.ndarray | None = None) -> np.ndarray:
    """The connected part of the spine classes that holds the most canal and disc (the largest part when neither is
    seen).

    Canal and discs define the column: bone around them is the spine, while a bright organ beside it (kidneys on
    water-weighted MRI were read as vertebrae with discs and canal) may be larger but lies off the body's midline.
    Canal alone was not enough: on a sagittal MRI slice a posterior blob held more of a fragmented canal than the
    column with all the discs. With ``midline_x`` (``qc.body_midline_x``), parts farther than
    ``qc.MAX_COLUMN_OFFSET_MM`` from it are not candidates.
    """
    parts, n = ndimage.label(classes > 0)
    if n == 0:
        return np.zeros(classes.shape, dtype=bool)
    labels = np.arange(1, n + 1)
    defining = ndimage.sum_labels((classes == CANAL) | (classes == DISC), parts, labels)
    size = ndimage.sum_labels(classes > 0, parts, labels)
    if midline_x is not None:
        beside = [qc.offset_from_midline_mm(semantic, parts == i, midline_x) > qc.MAX_COLUMN_OFFSET_MM for i in labels]
        if not all(beside):
            defining[beside], size[beside] = -1, -1
    score = defining if defining.max() > 0 else size
    return parts == int(np.argmax(score)) + 1


def clean_columns(semantic: Volume, hounsfield: Volume | None = None, midline_x: np.ndarray | None = None) -> Volume:
    """Apply the rules of the module docstring to a semantic class map on the network grid (LPS, axis-aligned);
    ``midline_x``: the body's left-right centre per axial slice (``qc.body_midline_x``), when known."""
    classes = semantic.array.copy()
    classes[~column_component(semantic, classes, midline_x)] = 0
    if not classes.any():
        return semantic.with_array(classes)
    axis_x = column_axis_x(semantic, classes)
    x_mm = semantic.origin[0] + semantic.spacing[0] * np.arange(classes.shape[2])
    lateral = np.abs(x_mm[None, None, :] - axis_x[:, None, None])
    classes[(classes == VERTEBRA) & (lateral > VERTEBRA_HALF_WIDTH_MM)] = 0
    classes[(classes == SACRUM) & (lateral > SACRUM_HALF_WIDTH_MM)] = 0
    classes[(classes == DISC) & (lateral > DISC_HALF_WIDTH_MM)] = 0
    discs = disc_chain(semantic, components(classes == DISC, semantic.voxel_volume_mm3, MIN_DISC_MM3))
    on_chain = np.any(discs, axis=0) if discs else np.zeros(classes.shape, dtype=bool)
    classes[(classes == DISC) & ~on_chain] = 0  # noise and discs off the column's chain
    if discs:  # sacrum above the top of the lowest disc is a mislabelled vertebra
        top = np.flatnonzero(discs[-1].any(axis=(1, 2))).max()
        classes[(classes == SACRUM) & (np.arange(classes.shape[0])[:, None, None] > top)] = VERTEBRA
    if hounsfield is not None:
        hu = ndimage.gaussian_filter(hounsfield.array.astype(np.float32), 0.5)
        classes[np.isin(classes, (VERTEBRA, SACRUM)) & (hu < MIN_BONE_HU)] = 0
        grow_bone(classes, hu, lateral <= VERTEBRA_HALF_WIDTH_MM, min(semantic.spacing))
        classes[~largest_component(classes > 0)] = 0
        grow_discs(classes, hu, semantic.spacing[0])
    return semantic.with_array(classes)


def grow_bone(classes: np.ndarray, hu: np.ndarray, allowed: np.ndarray, spacing_mm: float) -> None:
    """Add (in place) dense bone connected to the network's bone and marrow enclosed by cortex, with the nearest
    bone class: geodesic growth over unlabelled voxels of at least ``BONE_GROW_HU`` inside ``allowed``, up to
    ``BONE_GROW_MM``; then soft voxels of at least ``MARROW_HU`` enclosed by bone on an axial slice."""
    bone = np.isin(classes, (VERTEBRA, SACRUM))
    dense = (classes == 0) & (hu >= BONE_GROW_HU) & allowed
    reach = max(int(round(BONE_GROW_MM / spacing_mm)), 1)
    grown = ndimage.binary_dilation(bone, iterations=reach, mask=dense | bone)
    closed = [ndimage.binary_closing(axial, iterations=MARROW_CLOSING, border_value=0) for axial in grown]
    enclosed = np.stack([ndimage.binary_fill_holes(axial) for axial in closed])
    grow = (grown & ~bone) | (enclosed & ~grown & (classes == 0) & (hu >= MARROW_HU))
    nearest = ndimage.distance_transform_edt(~bone, return_indices=True)[1]
    classes[grow] = classes[tuple(index[grow] for index in nearest)]


def grow_discs(classes: np.ndarray, hu: np.ndarray, spacing_mm: float) -> None:
    """Extend each network disc (in place) over the soft tissue sandwiched between the bodies above and below it.

    A voxel joins a disc when it is unlabelled, of disc density (``DISC_HU``), within ``DISC_HALF_HEIGHT_MM`` of the
    disc's plane (PCA of its voxels) and ``DISC_RADIUS_MM`` of its centre, and bone lies within ``SANDWICH_MM``
    along the plane normal on both sides; only growth connected to the network's disc is kept.
    """
    parts, n = ndimage.label(classes == DISC)
    bone = np.isin(classes, (VERTEBRA, SACRUM))
    steps = np.arange(1, int(SANDWICH_MM / spacing_mm) + 1)
    for label in range(1, n + 1):
        idx = np.argwhere(parts == label)
        if len(idx) * spacing_mm**3 < MIN_DISC_MM3:
            continue
        centre = idx.mean(axis=0)
        normal = np.linalg.svd(idx - centre, full_matrices=False)[2][-1]
        lo = np.maximum(np.floor(centre - DISC_RADIUS_MM / spacing_mm).astype(int), 0)
        hi = np.minimum(np.ceil(centre + DISC_RADIUS_MM / spacing_mm).astype(int) + 1, classes.shape)
        box = np.argwhere(np.ones(hi - lo, dtype=bool)) + lo
        offset = (box - centre) * spacing_mm
        height = offset @ normal
        radial = np.linalg.norm(offset - height[:, None] * normal, axis=1)
        density = hu[tuple(box.T)]
        ok = (classes[tuple(box.T)] == 0) & (np.abs(height) <= DISC_HALF_HEIGHT_MM) & (radial <= DISC_RADIUS_MM)
        ok &= (density >= DISC_HU[0]) & (density <= DISC_HU[1])
        box = box[ok]
        sandwiched = np.ones(len(box), dtype=bool)
        for sign in (1.0, -1.0):
            hit = np.zeros(len(box), dtype=bool)
            for step in steps:
                probe = np.rint(box + sign * step * normal).astype(int)
                inside = np.all((probe >= 0) & (probe < classes.shape), axis=1)
                hit[inside] |= bone[tuple(probe[inside].T)]
            sandwiched &= hit
        candidate = parts == label
        candidate[tuple(box[sandwiched].T)] = True
        grown, _ = ndimage.label(candidate)
        keep = np.isin(grown, np.unique(grown[parts == label]))
        classes[keep & (classes == 0)] = DISC
