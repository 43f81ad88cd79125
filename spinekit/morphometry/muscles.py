"""Paraspinal muscle cross-sections per level and side: CSA, 2D centroid, intensity, fat, functional CSA.

Planes: through each disc's centre and each vertebral body's mid-height, perpendicular to the
local spine axis (:meth:`SpineModel.planes`). The muscle map is resampled onto each plane in
physical space at 0.5 mm (nearest neighbour, so labels stay labels); CSA = pixel count x pixel
area (Hess et al. 2023, Pain Med 24:S1: "sum of foreground pixels ... multiplied by pixel
spacing"). For thick-slice stacks (slice spacing > 2x in-plane, e.g. 4 mm axial Dixon) with the
plane within 20 deg of the slices, the native slice nearest to the plane is used instead, since
an oblique cut through 4 mm slices is a staircase.

Fat fraction: Dixon ``F / (F + W)`` per voxel, mean over the section (Reeder et al. 2012,
J Magn Reson Imaging 36:1011, proton-density fat fraction); CT: the same two-compartment model on
CT numbers, ``(HU_lean - mean HU) / (HU_lean - HU_fat)`` (muscle attenuation falls linearly with its
lipid content, Goodpaster et al. 2000, J Appl Physiol 89:104), and separately ``imat_fraction``, the
share of section pixels within [-190, -30] HU (adipose range, Kvist et al. 1988, Am J Clin Nutr
48:1351); MRI without Dixon: not measured (NaN with reason). Both leave out the pixels within
1.5 mm of the section's edge, which partial volume mixes with the surrounding fat.
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
from spinekit.morphometry.geometry import array_coordinates, label_slices, orthonormal_in_plane, sample, sample_nearest
from spinekit.tables import Measurement, missing, to_frame

#: CT adipose range (HU), Kvist et al. 1988.
CT_FAT_HU = (-190.0, -30.0)
#: CT numbers of the two compartments of muscle (HU): lean muscle and fat (typical values, Lamba et al. 2014,
#: Radiographics 34:1297, table of CT numbers: muscle 35-55, fat -70 to -120 HU).
CT_LEAN_HU = 50.0
CT_ADIPOSE_HU = -100.0
#: Section pixels closer than this (mm) to the section's edge are left out of intensity and fat fraction:
#: they mix in the neighbouring fat by partial volume (at 1 mm voxels and the ~0.6 mm sigma of a CT kernel).
PARTIAL_VOLUME_MARGIN_MM = 1.5
#: Fewest interior pixels for the margin to apply (else the whole section is used).
MIN_INTERIOR_PIXELS = 20
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
    grid = _plane_patch(np.asarray(centre, float), u, v, corners)
    coords = array_coordinates(muscles, grid)
    values = sample_nearest(muscles.array, coords.reshape(3, -1), 0).reshape(grid.shape[:-1]).astype(np.int32)
    upper = np.asarray(muscles.array.shape, float)[:, None, None] - 0.5
    outside = ~np.all((coords >= -0.5) & (coords <= upper), axis=0)
    near_edge = ndimage.binary_dilation(outside, iterations=2)
    near_edge[[0, -1], :] = True
    near_edge[:, [0, -1]] = True
    pixel_area = MUSCLE_PLANE_STEP_MM**2
    margin = max(1, int(round(PARTIAL_VOLUME_MARGIN_MM / MUSCLE_PLANE_STEP_MM)))
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
        interior = ndimage.binary_erosion(inside, iterations=margin)
        if interior.sum() >= MIN_INTERIOR_PIXELS:
            points = grid[interior]
        rows.extend(_intensity_rows(name, value, points, image, fat, water, source, ""))
        ff = next(r.value for r in rows[::-1] if r.metric == "fat_fraction")
        reason = next(r.reason for r in rows[::-1] if r.metric == "fat_fraction")
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


def _intensity_rows(
    name: str,
    value: int,
    points: np.ndarray,
    image: Volume | None,
    fat: Volume | None,
    water: Volume | None,
    source: str,
    note: str,
) -> list[Measurement]:
    """Mean intensity, fat fraction and (CT) adipose pixel share at LPS points of one muscle."""
    rows = []
    hu = None
    if image is not None:
        hu = sample(image, points, order=0)  # nearest: interpolation would blur fat into lean pixels
        rows.append(
            Measurement(
                name,
                value,
                "mean_intensity",
                float(hu.mean()),
                "HU" if source == "ct" else "a.u.",
                f"mean over the muscle interior{note}",
            )
        )
    ff, ff_method, reason = _fat_fraction(points, hu, fat, water, source)
    rows.append(Measurement(name, value, "fat_fraction", ff, "1", f"{ff_method}{note}", reason))
    if source == "ct":
        low, high = CT_FAT_HU
        share = float(np.mean((hu >= low) & (hu <= high)))
        method = f"CT share of pixels in [{low:g}, {high:g}] HU (Kvist 1988){note}"
        rows.append(Measurement(name, value, "imat_fraction", share, "1", method))
    return rows


def _plane_patch(centre: np.ndarray, u: np.ndarray, v: np.ndarray, corners: np.ndarray | None) -> np.ndarray:
    """LPS points (rows along ``v``, columns along ``u``) of the plane rectangle over the labelled box."""
    if corners is None:
        lo = np.array([-PLANE_HALF_SIZE_MM] * 2)
        hi = -lo
    else:
        offsets = corners - centre
        along = np.stack([offsets @ u, offsets @ v], axis=1)
        lo = np.maximum(along.min(axis=0) - 5.0, -PLANE_HALF_SIZE_MM)
        hi = np.minimum(along.max(axis=0) + 5.0, PLANE_HALF_SIZE_MM)
    a = np.arange(lo[0], hi[0] + MUSCLE_PLANE_STEP_MM / 2, MUSCLE_PLANE_STEP_MM)
    b = np.arange(lo[1], hi[1] + MUSCLE_PLANE_STEP_MM / 2, MUSCLE_PLANE_STEP_MM)
    return centre[None, None, :] + a[None, :, None] * u[None, None, :] + b[:, None, None] * v[None, None, :]


def _labelled_corners(muscles: Volume, boxes: dict[int, tuple[slice, slice, slice]]) -> np.ndarray | None:
    """LPS corners of the box holding every muscle label (None for an empty map)."""
    if not boxes:
        return None
    starts = np.array([[sl.start for sl in box] for box in boxes.values()])
    stops = np.array([[sl.stop - 1 for sl in box] for box in boxes.values()])
    (k0, j0, i0), (k1, j1, i1) = starts.min(axis=0), stops.max(axis=0)
    corners = np.array([[i, j, k] for i in (i0, i1) for j in (j0, j1) for k in (k0, k1)], float)
    return muscles.index_to_lps(corners)


def _fat_fraction(
    points: np.ndarray, hu: np.ndarray | None, fat: Volume | None, water: Volume | None, source: str
) -> tuple[float, str, str]:
    if source == "dixon":
        f = sample(fat, points)
        w = sample(water, points)
        total = f + w
        valid = total > 0
        if not valid.any():
            return math.nan, "Dixon F/(F+W)", "fat + water is zero on the section"
        return float(np.mean(f[valid] / total[valid])), "Dixon F/(F+W), mean over the muscle interior", ""
    if source == "ct" and hu is not None:
        ff = (CT_LEAN_HU - float(np.mean(hu))) / (CT_LEAN_HU - CT_ADIPOSE_HU)
        method = f"CT two-compartment (HU_lean {CT_LEAN_HU:g}, HU_fat {CT_ADIPOSE_HU:g}) from the mean HU"
        return float(np.clip(ff, 0.0, 1.0)), method, ""
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
    boxes = label_slices(muscles.array)
    present = sorted(boxes)
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
    corners = _labelled_corners(muscles, boxes)
    for plane in planes:
        rows.extend(_section_rows(plane, muscles, present, image, fat, water, source, corners))
    rows.extend(_volume_rows(muscles, present, image, fat, water, source, boxes))
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
    boxes: dict[int, tuple[slice, slice, slice]],
) -> list[Measurement]:
    rows = []
    for value in present:
        name = lab.MUSCLES[value].name if value in lab.MUSCLES else f"muscle {value}"
        box = boxes[value]
        mask = muscles.array[box] == value
        count = int(mask.sum())
        rows.append(
            Measurement(
                name, value, "muscle_volume", count * muscles.voxel_volume_mm3, "mm3", "voxel count x voxel volume"
            )
        )
        interior = ndimage.binary_erosion(mask)  # one voxel in: off the partial-volume rim
        if interior.sum() >= MIN_INTERIOR_PIXELS:
            mask = interior
        k, j, i = np.nonzero(mask)
        step = max(1, len(k) // MAX_VOLUME_SAMPLES)
        ijk = np.stack([i[::step] + box[2].start, j[::step] + box[1].start, k[::step] + box[0].start], axis=1)
        points = muscles.origin + (ijk * np.asarray(muscles.spacing)) @ muscles.direction.T
        note = " (whole muscle" + (f", every {step}th voxel)" if step > 1 else ")")
        rows.extend(_intensity_rows(name, value, points, image, fat, water, source, note))
    return rows
