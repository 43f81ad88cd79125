"""Intervertebral disc heights: the seed study's bounding-rectangle method and a local-axis method.

Seed method (Hess et al. 2023, Pain Med 24:S1, "Methods": "a 3D centroid was computed on each
segmented disc to identify its most central slice; a minimum bounding rectangle was then
constructed around the segmentation on the center slice to extract the shortest side length"):
the mid-sagittal plane of the disc in physical space (through its centroid, perpendicular to the
local right-left axis), resampled, and the minimum-area rectangle of the disc's pixels (rotating
calipers on the convex hull of the pixel corners, Freeman & Shapira 1975, Commun ACM 18:409), its
shorter side in mm.

Local-axis method: heights at 15/50/85 % of the disc depth along the mean superior axis of the
two adjacent vertebrae, from the disc label's extent, and independently the gap between the
adjacent body endplates along the same lines (works without a disc label).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from spinekit import labels as lab
from spinekit.morphometry.context import SpineModel
from spinekit.morphometry.geometry import line_extents, sample
from spinekit.morphometry.heights import LATERAL_OFFSETS_MM, POSITIONS, gaps_along, heights_along
from spinekit.tables import Measurement, missing

SEED_METHOD = "Hess 2023: min-area bounding rectangle on the central sagittal section (physical), shorter side"
#: Pixel size (mm) of the resliced central sagittal section of the seed method.
SEED_PIXEL_MM = 0.25
AXIS_METHOD = "disc mask extent along local spine axis at 15/50/85 % depth"
GAP_METHOD = "endplate-to-endplate distance along local spine axis at 15/50/85 % depth"


def min_area_rectangle(points_mm: np.ndarray) -> tuple[float, float, float]:
    """Minimum-area enclosing rectangle of 2D points: (shorter side, longer side, angle in degrees)."""
    points = np.asarray(points_mm, float)
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return math.nan, math.nan, math.nan
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    best = (math.inf, math.nan, math.nan, math.nan)
    for angle in angles:
        c, s = np.cos(angle), np.sin(angle)
        rotated = hull @ np.array([[c, -s], [s, c]])
        extent = rotated.max(axis=0) - rotated.min(axis=0)
        area = float(extent[0] * extent[1])
        if area < best[0]:
            best = (area, float(extent.min()), float(extent.max()), float(np.degrees(angle)))
    return best[1], best[2], best[3]


def seed_disc_height(model: SpineModel, disc: int) -> tuple[float, str]:
    """Disc height by the seed study's method (mm) and a reason when NaN.

    The "most central sagittal slice" is resliced in physical space: the plane through the disc
    centroid perpendicular to the local right-left axis (mean of the adjacent vertebrae's frames), sampled
    at :data:`SEED_PIXEL_MM` from the smoothed disc mask. A grid slice of an oblique image would cut
    the disc obliquely and lengthen its short side (10.4 mm for a 9 mm disc on a 23-degree grid).
    """
    crop = model.discs.get(disc)
    if crop is None:
        return math.nan, "disc label absent"
    upper = disc - 100
    lower = model.lower_neighbour(upper) if upper in model.frames else None
    volume = crop.volume
    inside = volume.array >= 0.5
    if inside.sum() < 3:
        return math.nan, "disc label holds fewer than 3 voxels"
    centre = volume.index_to_lps(np.argwhere(inside)[:, ::-1].mean(axis=0))
    if lower is not None:
        superior, anterior = model.disc_axis(upper, lower)
    else:
        superior, anterior = np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])
    reach = 0.5 * float(np.linalg.norm(np.asarray(volume.array.shape) * np.asarray(volume.spacing)[::-1]))
    offsets = np.arange(-reach, reach + SEED_PIXEL_MM / 2, SEED_PIXEL_MM)
    grid = (
        centre[None, None, :]
        + offsets[None, :, None] * anterior[None, None, :]
        + offsets[:, None, None] * superior[None, None, :]
    )
    section = sample(volume, grid) >= 0.5
    rows, cols = np.nonzero(section)
    if len(rows) < 3:
        return math.nan, "central sagittal section holds fewer than 3 disc pixels"
    pixels = np.stack([offsets[cols], offsets[rows]], axis=1)
    half = SEED_PIXEL_MM / 2
    corners = np.concatenate(
        [pixels + np.array(c) for c in ((-half, -half), (-half, half), (half, -half), (half, half))]
    )
    short, _long, _angle = min_area_rectangle(corners)
    return short, ""


def disc_measurements(model: SpineModel) -> list[Measurement]:
    """Tidy rows for every adjacent vertebra pair (and every disc label) present."""
    rows: list[Measurement] = []
    spine = model.spine
    for upper in model.order:
        lower = model.lower_neighbour(upper)
        if upper == lab.SACRUM or lower is None:
            continue
        disc = lab.disc_label(upper)
        name = f"{model.frames[upper].name}/{model.frames[lower].name}"
        order = lab.CRANIOCAUDAL_ORDER
        skipped = [
            lab.VERTEBRA_NAMES[v]
            for v in order[order.index(upper) + 1 : order.index(lower)]
            if v not in (lab.L6, lab.T13)  # transitional levels are optional
        ]
        gap_note = f"levels {', '.join(skipped)} missing between {name.replace('/', ' and ')}" if skipped else ""
        superior, anterior = model.disc_axis(upper, lower)
        right = np.cross(anterior, superior)
        if disc in model.discs:
            crop = model.discs[disc]
            volume = crop.volume
            centre = volume.index_to_lps(np.argwhere(volume.array >= 0.5)[:, ::-1].mean(axis=0))
            for axis, value in zip("xyz", centre, strict=True):
                rows.append(Measurement(name, disc, f"centroid_{axis}_lps", value, "mm", "mean of voxel centres (LPS)"))
            rows.append(
                Measurement(
                    name,
                    disc,
                    "disc_volume",
                    float((volume.array >= 0.5).sum()) * spine.voxel_volume_mm3,
                    "mm3",
                    "voxel count x voxel volume",
                )
            )
            result = heights_along(volume, centre, superior, anterior, right)
            for position in POSITIONS:
                value = result.heights[position]
                reason = result.reason if not np.isfinite(value) else ""
                if crop.touches_border:
                    value, reason = math.nan, "disc touches the image border"
                rows.append(Measurement(name, disc, f"disc_height_{position}", value, "mm", AXIS_METHOD, reason))
            seed, reason = seed_disc_height(model, disc)
            rows.append(Measurement(name, disc, "disc_height_seed", seed, "mm", SEED_METHOD, reason))
        else:
            for position in POSITIONS:
                rows.append(
                    missing(name, disc, f"disc_height_{position}", "mm", AXIS_METHOD, "no disc label in the spine map")
                )
            rows.append(missing(name, disc, "disc_height_seed", "mm", SEED_METHOD, "no disc label in the spine map"))
        rows.extend(_gap_rows(model, upper, lower, disc, name, superior, anterior, right, gap_note))
    return rows


def _gap_rows(
    model: SpineModel,
    upper: int,
    lower: int,
    disc: int,
    name: str,
    superior: np.ndarray,
    anterior: np.ndarray,
    right: np.ndarray,
    gap_note: str,
) -> list[Measurement]:
    rows = []
    top, bottom = model.bodies.get(upper), model.bodies.get(lower)
    result = model.heights.get(upper)
    reason = gap_note
    if top is None or bottom is None or result is None or result.depth_segment is None:
        reason = reason or "adjacent vertebral body not separated"
    if reason:
        return [missing(name, disc, f"endplate_gap_{p}", "mm", GAP_METHOD, reason) for p in POSITIONS]
    posterior_end, anterior_end = result.depth_segment
    for position, fraction in POSITIONS.items():
        point = posterior_end + fraction * (anterior_end - posterior_end)
        points = point[None, :] + np.asarray(LATERAL_OFFSETS_MM)[:, None] * right[None, :]
        low, _high = line_extents(top.volume, points, superior)
        # Start each line just below the upper body's inferior endplate, inside the gap.
        starts = points + (np.nan_to_num(low, nan=-10.0) - 0.3)[:, None] * superior[None, :]
        gaps = gaps_along(top.volume, bottom.volume, starts, superior) if np.any(np.isfinite(low)) else low
        gaps = np.where(np.isfinite(low), gaps, np.nan)
        value = float(np.nanmedian(gaps)) if np.any(np.isfinite(gaps)) else math.nan
        why = "" if np.isfinite(value) else "endplates not found along the line"
        rows.append(Measurement(name, disc, f"endplate_gap_{position}", value, "mm", GAP_METHOD, why))
    return rows
