"""Paraspinal muscle cross-sections per level and side: CSA, 2D centroid, intensity, fat, functional CSA.

Planes: through each disc's centre and each vertebral body's mid-height, perpendicular to the
local spine axis (:meth:`SpineModel.planes`). The muscle map is resampled onto each plane in
physical space at 0.5 mm (nearest neighbour, so labels stay labels); CSA = pixel count x pixel
area (Hess et al. 2023, Pain Med 24:S1: "sum of foreground pixels ... multiplied by pixel
spacing"). For thick-slice stacks (slice spacing > 2x in-plane, e.g. 4 mm axial Dixon) with the
plane within 20 deg of the slices, the native slice nearest to the plane is used instead, since
an oblique cut through 4 mm slices is a staircase.

Fat fraction: Dixon ``F / (F + W)`` per voxel, mean over the section (Reeder et al. 2012,
J Magn Reson Imaging 36:1011, proton-density fat fraction); CT: share of section pixels within
[-190, -30] HU (adipose range, Kvist et al. 1988, Am J Clin Nutr 48:1351; as used by Goodpaster
et al. 2000, J Appl Physiol 89:104); MRI without Dixon: not measured (NaN with reason).
Functional CSA = CSA x (1 - fat fraction) (lean area; Fortin & Macedo 2013, Phys Ther 93:873).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage

from spinekit import labels as lab
from spinekit.errors import GridMismatchError, InputError
from spinekit.io import Volume
from spinekit.morphometry.context import LevelPlane, SpineModel, build_spine_model
from spinekit.morphometry.geometry import inside_grid, label_slices, orthonormal_in_plane, plane_grid, sample
from spinekit.tables import Measurement, missing, to_frame

#: CT adipose range (HU), Kvist et al. 1988.
CT_FAT_HU = (-190.0, -30.0)
#: An image whose minimum is below this is taken as CT in Hounsfield units (air is -1000 HU).
CT_MIN_HU = -500.0
#: Half-size (mm) of the square sampled on each plane: wide enough for psoas and erector spinae.
PLANE_HALF_SIZE_MM = 130.0
#: Pixel size (mm) on the plane.
MUSCLE_PLANE_STEP_MM = 0.5
#: Slice spacing over in-plane spacing above which native slices are used.
THICK_SLICE_RATIO = 2.0
#: Voxels sampled per muscle for whole-muscle intensity and fat (an unbiased regular subsample beyond this).
MAX_VOLUME_SAMPLES = 50_000
#: Largest angle (deg) between plane normal and the slice axis for native-slice sampling.
NATIVE_SLICE_MAX_DEG = 20.0


def _fat_source(image: Volume | None, fat: Volume | None, water: Volume | None) -> str:
    if fat is not None and water is not None:
        return "dixon"
    if image is not None and float(np.min(image.array)) < CT_MIN_HU:
        return "ct"
    return "none"


def _native_plane(muscles: Volume, plane: LevelPlane) -> tuple[np.ndarray, np.ndarray, str] | None:
    spacing = np.asarray(muscles.spacing)
    thick = int(np.argmax(spacing))
    if spacing[thick] < THICK_SLICE_RATIO * np.delete(spacing, thick).max():
        return None
    axis = muscles.direction[:, thick]
    if abs(np.dot(axis, plane.normal)) < np.cos(np.radians(NATIVE_SLICE_MAX_DEG)):
        return None
    index = muscles.lps_to_index(plane.centre)
    index[thick] = np.clip(np.round(index[thick]), 0, muscles.shape_ijk[thick] - 1)
    centre = muscles.index_to_lps(index)
    normal = axis * np.sign(np.dot(axis, plane.normal))
    method = f"native slice nearest to the {plane.kind} plane ({spacing[thick]:g} mm slices)"
    return centre, normal, method


def _section_rows(
    plane: LevelPlane,
    muscles: Volume,
    present: list[int],
    image: Volume | None,
    fat: Volume | None,
    water: Volume | None,
    source: str,
    corners: np.ndarray | None = None,
) -> list[Measurement]:
    rows: list[Measurement] = []
    centre, normal, method = plane.centre, plane.normal, plane.method
    native = _native_plane(muscles, plane)
    if native is not None:
        centre, normal, method = native
    u, v = orthonormal_in_plane(normal, np.cross(plane.anterior, normal))
    grid, _ = plane_grid(np.asarray(centre, float), u, v, _half_size(corners, centre, u, v), MUSCLE_PLANE_STEP_MM)
    values = sample(muscles, grid, order=0).astype(np.int32)
    outside = ~inside_grid(muscles, grid)
    near_edge = ndimage.binary_dilation(outside, iterations=2)
    near_edge[[0, -1], :] = True
    near_edge[:, [0, -1]] = True
    pixel_area = MUSCLE_PLANE_STEP_MM**2
    for value in present:
        name = f"{lab.MUSCLES[value].name} {plane.name}" if value in lab.MUSCLES else f"muscle {value} {plane.name}"
        inside = values == value
        count = int(inside.sum())
        if count == 0:
            reason = "plane outside the muscle image" if outside.all() else "muscle label absent on this plane"
            for metric, unit in (("csa_mm2", "mm2"), ("csa_cm2", "cm2")):
                rows.append(missing(name, value, metric, unit, method, reason))
            continue
        if (inside & near_edge).any():
            for metric, unit in (("csa_mm2", "mm2"), ("csa_cm2", "cm2")):
                rows.append(missing(name, value, metric, unit, method, "muscle section reaches the image border"))
            continue
        area = count * pixel_area
        rows.append(Measurement(name, value, "csa_mm2", area, "mm2", method))
        rows.append(Measurement(name, value, "csa_cm2", area / 100.0, "cm2", method))
        points = grid[inside]
        for axis, coordinate in zip("xyz", points.mean(axis=0), strict=True):
            rows.append(Measurement(name, value, f"centroid_{axis}_lps", coordinate, "mm", "2D centroid of section"))
        if image is not None:
            rows.append(
                Measurement(
                    name,
                    value,
                    "mean_intensity",
                    float(sample(image, points).mean()),
                    "HU" if source == "ct" else "a.u.",
                    "mean of linearly resampled image",
                )
            )
        ff, ff_method, reason = _fat_fraction(points, image, fat, water, source)
        rows.append(Measurement(name, value, "fat_fraction", ff, "1", ff_method, reason))
        rows.append(
            Measurement(
                name,
                value,
                "functional_csa_cm2",
                area / 100.0 * (1.0 - ff) if np.isfinite(ff) else math.nan,
                "cm2",
                "CSA x (1 - fat fraction)",
                reason,
            )
        )
    return rows


def _labelled_corners(muscles: Volume) -> np.ndarray | None:
    """LPS corners of the box holding every muscle label (None for an empty map)."""
    box = ndimage.find_objects((muscles.array > 0).astype(np.uint8))
    if not box or box[0] is None:
        return None
    (k0, k1), (j0, j1), (i0, i1) = [(sl.start, sl.stop - 1) for sl in box[0]]
    corners = np.array([[i, j, k] for i in (i0, i1) for j in (j0, j1) for k in (k0, k1)], float)
    return muscles.index_to_lps(corners)


def _half_size(corners: np.ndarray | None, centre: np.ndarray, u: np.ndarray, v: np.ndarray) -> float:
    """Half-size (mm) of the plane square that covers the muscle map's labelled box (capped)."""
    if corners is None:
        return PLANE_HALF_SIZE_MM
    offsets = corners - centre
    reach = float(np.max(np.abs(np.concatenate([offsets @ u, offsets @ v])))) + 5.0
    return min(PLANE_HALF_SIZE_MM, reach)


def _fat_fraction(
    points: np.ndarray, image: Volume | None, fat: Volume | None, water: Volume | None, source: str
) -> tuple[float, str, str]:
    if source == "dixon":
        f = sample(fat, points)
        w = sample(water, points)
        total = f + w
        valid = total > 0
        if not valid.any():
            return math.nan, "Dixon F/(F+W)", "fat + water is zero on the section"
        return float(np.mean(f[valid] / total[valid])), "Dixon F/(F+W), mean over section", ""
    if source == "ct":
        hu = sample(image, points, order=0)  # nearest: interpolated HU would blur fat into lean pixels
        low, high = CT_FAT_HU
        return float(np.mean((hu >= low) & (hu <= high))), f"CT share of pixels in [{low:g}, {high:g}] HU", ""
    return math.nan, "not measured", "no Dixon fat/water images and the image is not CT"


def muscle_cross_sections(
    muscles: Volume,
    spine: Volume | None,
    image: Volume | None = None,
    fat: Volume | None = None,
    water: Volume | None = None,
    model: SpineModel | None = None,
) -> pd.DataFrame:
    """Tidy rows per muscle x level (CSA mm^2/cm^2, 2D centroid, intensity, fat fraction, functional CSA).

    Without a spine map (``spine=None``) there are no levels: sections are the native slices of the
    muscle map, named ``slice <k>``. Whole-muscle volume, intensity and fat fraction are added
    under the muscle's own name.
    """
    counts = np.bincount(np.clip(muscles.array, 0, None).ravel().astype(np.int64))
    present = [int(v) for v in np.nonzero(counts)[0] if v > 0]
    if (fat is None) != (water is None):
        raise InputError("pass both the Dixon fat and water images (or neither)")
    if fat is not None and not fat.same_grid(water):
        raise GridMismatchError(
            f"Dixon fat and water images have different geometry (origin {fat.origin} vs {water.origin}, "
            f"size {fat.shape_ijk} vs {water.shape_ijk}); one header is wrong. Copy the correct geometry onto the "
            "other (e.g. fat.with_array(water.array) when both come from the same acquisition)"
        )
    source = _fat_source(image, fat, water)
    rows: list[Measurement] = []
    if spine is not None:
        model = model or build_spine_model(spine)
        planes = model.planes()
    else:
        planes = _native_slices(muscles)
    corners = _labelled_corners(muscles)
    for plane in planes:
        rows.extend(_section_rows(plane, muscles, present, image, fat, water, source, corners))
    rows.extend(_volume_rows(muscles, present, image, fat, water, source))
    return to_frame(rows)


def _native_slices(muscles: Volume) -> list[LevelPlane]:
    thick = int(np.argmax(muscles.spacing))
    axis = muscles.direction[:, thick]
    normal = axis * (1.0 if axis[2] >= 0 else -1.0)
    middle = (np.asarray(muscles.shape_ijk) - 1) / 2.0
    planes = []
    for k in range(muscles.shape_ijk[thick]):
        index = middle.copy()
        index[thick] = k
        planes.append(
            LevelPlane(
                f"slice {k}",
                "slice",
                k,
                muscles.index_to_lps(index),
                normal,
                np.array([0.0, -1.0, 0.0]),
                "native slice (no spine map)",
            )
        )
    return planes


def _volume_rows(
    muscles: Volume,
    present: list[int],
    image: Volume | None,
    fat: Volume | None,
    water: Volume | None,
    source: str,
) -> list[Measurement]:
    rows = []
    boxes = label_slices(muscles.array)
    for value in present:
        name = lab.MUSCLES[value].name if value in lab.MUSCLES else f"muscle {value}"
        box = boxes[value]
        k, j, i = np.nonzero(muscles.array[box] == value)
        rows.append(
            Measurement(
                name,
                value,
                "muscle_volume",
                float(len(k)) * muscles.voxel_volume_mm3,
                "mm3",
                "voxel count x voxel volume",
            )
        )
        step = max(1, len(k) // MAX_VOLUME_SAMPLES)
        ijk = np.stack([i[::step] + box[2].start, j[::step] + box[1].start, k[::step] + box[0].start], axis=1)
        points = muscles.index_to_lps(ijk.astype(float))
        note = f" (every {step}th voxel)" if step > 1 else ""
        if image is not None:
            rows.append(
                Measurement(
                    name,
                    value,
                    "mean_intensity",
                    float(sample(image, points).mean()),
                    "HU" if source == "ct" else "a.u.",
                    f"mean over muscle volume{note}",
                )
            )
        ff, method, reason = _fat_fraction(points, image, fat, water, source)
        rows.append(Measurement(name, value, "fat_fraction", ff, "1", f"{method} (whole muscle{note})", reason))
    return rows
