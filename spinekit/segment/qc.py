"""Quality-control flags for automatic segmentations: empty result, missing levels, implausible volumes, fragments.

Each flag is a dict ``{"flag": name, "label": value or None, "detail": text}`` so ``segment.json`` and the Slicer
panel can list them. Plausible volumes: whole thoracolumbar vertebrae (body + posterior elements) measure about
50-65 cm^3 and discs 8-15 cm^3 in the TotalSegmentator labels of ../shared/data/ct_lumbar_3mm (T12-S1, measured
with ``assign_instances`` at 3 mm); we flag outside a deliberately wide band (factor ~3-5) around those.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spinekit import labels as lb
from spinekit.io import Volume

#: Whole-vertebra volume band (mm^3) outside which we flag (see module docstring).
VERTEBRA_VOLUME_MM3 = (10_000.0, 180_000.0)
#: Disc volume band (mm^3), see the module docstring.
DISC_VOLUME_MM3 = (1_000.0, 40_000.0)
#: A label is fragmented when its second-largest component holds more than this share of its voxels.
FRAGMENT_SHARE = 0.10
#: Longest extent (mm, along the principal axis) of one vertebra: lumbar transverse processes span about 70-95 mm
#: tip to tip (Panjabi et al. 1992, Spine 17:299); a "vertebra" over 130 mm is a long bone (knee, hip), a skull or a
#: merged column, not one vertebra.
MAX_VERTEBRA_EXTENT_MM = 130.0
#: A vertebra is compact: lumbar bodies are ~45-50 mm wide, ~35 mm deep and ~27 mm high, posterior elements add depth
#: and width (Panjabi et al. 1992, Spine 17:299), so its longest principal extent is under 2x the second; a long-bone
#: shaft cut into a "vertebra" (knee, femur) is rod-like (ratio > 2).
MAX_VERTEBRA_ELONGATION = 2.0
#: Lag-1 voxel autocorrelation below which an image is noise without anatomy (``noise_only``).
MIN_NEIGHBOUR_CORRELATION = 0.3
#: Mean network confidence (max softmax) over predicted foreground below which the result is not trusted.
MIN_CONFIDENCE = 0.6
#: Without a spine, muscles need this mean confidence: the muscle network measured 0.87-0.88 on the real lumbar CT and
#: Dixon MRI of ../shared/data but 0.69-0.74 on the synthetic head and knee CTs of the tests (thin evidence; a
#: threshold between the two groups).
MIN_CONFIDENCE_WITHOUT_SPINE = 0.8
#: Paired back muscles (multifidus + erector spinae, our labels 5/7 left, 6/8 right): least volume per side (cm^3,
#: a few axial slices of a lumbar scan) and largest left/right ratio (also ``muscle_flags``' asymmetry limit).
BACK_MUSCLES_LEFT = (5, 7)
BACK_MUSCLES_RIGHT = (6, 8)
MIN_BACK_MUSCLE_CM3 = 10.0
MAX_SIDE_RATIO = 2.0
#: Farthest (mm, median over axial slices) the column may lie left or right of the body's midline. The kidneys lie
#: 70-90 mm from the midline (their hila ~50 mm; Standring 2020, Gray's Anatomy) and were read as a whole "spine" on
#: a water-weighted MRI; ASSUMPTION: lumbar scoliosis rarely moves the column more than 60 mm off the body's midline
#: (the flag names the offset, so a user with such a curve knows why).
MAX_COLUMN_OFFSET_MM = 60.0


def flag(name: str, detail: str, label: int | None = None) -> dict:
    return {"flag": name, "label": label, "detail": detail}


def fragmented(mask: np.ndarray) -> bool:
    components, n = ndimage.label(mask)
    if n < 2:
        return False
    sizes = np.sort(ndimage.sum_labels(mask, components, range(1, n + 1)))[::-1]
    return sizes[1] / sizes.sum() > FRAGMENT_SHARE


def principal_extents_mm(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """Extents (mm) of ``mask`` along its three principal axes, largest first (Pearson 1901 PCA of voxel centres)."""
    idx = np.argwhere(mask)
    if len(idx) < 2:
        return np.zeros(3)
    points = volume.index_to_lps(idx[:, ::-1].astype(float))
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return np.sort(np.ptp(centred @ vt.T, axis=0))[::-1]


def vertebra_shaped(volume: Volume, mask: np.ndarray) -> bool:
    """Not longer than one vertebra (``MAX_VERTEBRA_EXTENT_MM``) and not rod-like (``MAX_VERTEBRA_ELONGATION``)."""
    extents = principal_extents_mm(volume, mask)
    return bool(extents[0] <= MAX_VERTEBRA_EXTENT_MM and extents[0] <= MAX_VERTEBRA_ELONGATION * max(extents[1], 1.0))


def touches_border(mask: np.ndarray) -> bool:
    """Whether ``mask`` reaches any face of its array (the scan's field of view)."""
    return any(np.take(mask, index, axis=axis).any() for axis in range(mask.ndim) for index in (0, -1))


def spine_flags(spine: Volume, levels: list[int], levels_known: bool) -> list[dict]:
    """Missing levels (gaps in the count), implausible vertebra/disc volumes, fragmented labels; a vertebra or disc
    too small because the field of view cuts it is flagged ``cut_by_field_of_view``, not ``implausible_volume``."""
    flags = []
    array = spine.array
    voxel = spine.voxel_volume_mm3
    vertebrae = [v for v in levels if lb.is_vertebra(v) and v != lb.SACRUM]
    if levels_known and vertebrae:
        order = [v for v in lb.CRANIOCAUDAL_ORDER if v not in (lb.T13, lb.L6)]
        bottom = 24 if lb.SACRUM in levels else max(vertebrae, key=order.index)  # counted from the sacrum or a rib
        span = order[order.index(min(vertebrae, key=order.index)) : order.index(bottom) + 1]
        missing = [v for v in span if v not in vertebrae]
        if missing:
            flags.append(flag("missing_levels", ", ".join(lb.VERTEBRA_NAMES[v] for v in missing)))
    for value in np.unique(array):
        value = int(value)
        if value == 0 or value == lb.CANAL:
            continue
        mask = array == value
        volume = float(mask.sum() * voxel)
        is_vertebra = (lb.is_vertebra(value) and value != lb.SACRUM) or 200 < value < 300
        is_disc = lb.is_disc(value) or 300 < value < 400
        band = VERTEBRA_VOLUME_MM3 if is_vertebra else DISC_VOLUME_MM3 if is_disc else None
        if band and volume < band[0] and touches_border(mask):
            flags.append(flag("cut_by_field_of_view", f"{volume / 1000:.1f} cm3 at the image border: part of it lies "
                              "outside the scan, so its volume and heights are not whole", value))  # fmt: skip
        elif band and not band[0] <= volume <= band[1]:
            flags.append(flag("implausible_volume", f"{volume / 1000:.1f} cm3 outside {band[0] / 1000:.0f}-"
                              f"{band[1] / 1000:.0f} cm3", value))  # fmt: skip
        if fragmented(mask):
            flags.append(flag("fragmented_label", "second component over 10% of the label", value))
    return flags


def muscle_flags(muscles: Volume) -> list[dict]:
    """Fragmented muscle labels and left/right volume asymmetry over a factor of two."""
    flags = []
    array = muscles.array
    for value in np.unique(array):
        value = int(value)
        if value == 0:
            continue
        if fragmented(array == value):
            flags.append(flag("fragmented_label", "second component over 10% of the label", value))
        if value % 2 == 1:
            left, right = (array == value).sum(), (array == value + 1).sum()
            if min(left, right) == 0 or max(left, right) / min(left, right) > MAX_SIDE_RATIO:
                flags.append(flag("asymmetric_muscle", f"left {left} vs right {right} voxels", value))
    return flags


def muscles_implausible_without_spine(muscles: Volume, mean_confidence: float) -> str | None:
    """Why a muscle result without a spine result is not trusted, or None when it is.

    Without the spine as an anchor we keep muscles only when the network is sure (``MIN_CONFIDENCE_WITHOUT_SPINE``)
    and the paired back muscles (multifidus + erector spinae) are there on both sides, each over
    ``MIN_BACK_MUSCLE_CM3`` and within a factor ``MAX_SIDE_RATIO`` of the other (Standring 2020: they are paired).
    """
    if not mean_confidence >= MIN_CONFIDENCE_WITHOUT_SPINE:
        return f"no spine found and mean confidence {mean_confidence:.2f} < {MIN_CONFIDENCE_WITHOUT_SPINE}"
    voxel_cm3 = muscles.voxel_volume_mm3 / 1000
    left = float(np.isin(muscles.array, BACK_MUSCLES_LEFT).sum() * voxel_cm3)
    right = float(np.isin(muscles.array, BACK_MUSCLES_RIGHT).sum() * voxel_cm3)
    if min(left, right) < MIN_BACK_MUSCLE_CM3 or max(left, right) > MAX_SIDE_RATIO * min(left, right):
        return f"no spine found and back muscles not paired (left {left:.0f} cm3, right {right:.0f} cm3)"
    return None


def noise_only(image: Volume) -> str | None:
    """Why ``image`` holds no anatomy (uncorrelated noise), or None.

    Anatomy is smooth on the scale of a voxel: neighbouring voxels of a CT or MRI correlate strongly (r > 0.5) along
    at least one axis, while independent noise does not (r ~ 0). We measure the lag-1 autocorrelation along each
    array axis on a central crop and call the image noise below ``MIN_NEIGHBOUR_CORRELATION`` on all three.
    """
    array = np.asarray(image.array, dtype=np.float64)
    crop = tuple(slice(n // 4, max(n // 4 + 2, 3 * n // 4)) for n in array.shape)
    block = array[crop]
    correlations = []
    for axis in range(3):
        if block.shape[axis] < 2:
            continue
        a = np.moveaxis(block, axis, 0)
        x, y = a[:-1].ravel(), a[1:].ravel()
        if x.std() > 0 and y.std() > 0:
            correlations.append(float(np.corrcoef(x, y)[0, 1]))
    best = max(correlations, default=0.0)
    if best < MIN_NEIGHBOUR_CORRELATION:
        return f"neighbouring voxels do not correlate (best r = {best:.2f}): the image is blank or noise, not anatomy"
    return None


def body_midline_x(image: Volume) -> np.ndarray:
    """Left-right centre (mm, LPS x) of the body on each axial slice of an axis-aligned LPS grid, NaN without body.

    The body is the Otsu foreground of the whole volume.
    """
    from skimage.filters import threshold_otsu

    array = image.array.astype(np.float32)
    midline = np.full(array.shape[0], np.nan)
    if np.ptp(array) <= 0:
        return midline
    body = array > threshold_otsu(array)
    x_mm = image.origin[0] + image.spacing[0] * np.arange(array.shape[2])
    for k in np.flatnonzero(body.any(axis=(1, 2))):
        midline[k] = x_mm[np.nonzero(body[k])[1]].mean()
    return midline


def offset_from_midline_mm(volume: Volume, mask: np.ndarray, midline_x: np.ndarray) -> float:
    """Median over axial slices of how far (mm, left-right) ``mask`` lies from the body's midline; 0 when unknown."""
    x_mm = volume.origin[0] + volume.spacing[0] * np.arange(mask.shape[2])
    offsets = [
        abs(x_mm[np.nonzero(mask[k])[1]].mean() - midline_x[k])
        for k in np.flatnonzero(mask.any(axis=(1, 2)))
        if np.isfinite(midline_x[k])
    ]
    return float(np.median(offsets)) if offsets else 0.0


def column_off_midline(semantic: Volume, midline_x: np.ndarray) -> str | None:
    """Why the spine classes cannot be the column (too far left or right of the body's midline), or None.

    ``midline_x``: the body's centre per axial slice of ``semantic``'s grid (``body_midline_x``).
    """
    offset = offset_from_midline_mm(semantic, semantic.array > 0, midline_x)
    if offset > MAX_COLUMN_OFFSET_MM:
        return f"the segmented column lies {offset:.0f} mm beside the body's midline (> {MAX_COLUMN_OFFSET_MM:.0f} mm)"
    return None


def confidence_flag(confidence: Volume, labels: Volume) -> tuple[float, dict | None]:
    """Mean confidence over predicted foreground, and a ``low_confidence`` flag when under the threshold."""
    foreground = labels.array > 0
    if not foreground.any():
        return float("nan"), None
    mean = float(confidence.array[foreground].mean())
    if mean < MIN_CONFIDENCE:
        return mean, flag("low_confidence", f"mean foreground confidence {mean:.2f} < {MIN_CONFIDENCE}")
    return mean, None
