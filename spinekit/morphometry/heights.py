"""Anterior / middle / posterior heights of a mask along an axis, and oblique section areas.

Heights are measured on lines parallel to the structure's superior axis through points at
15 %, 50 % and 85 % of its depth along the anterior axis, the positions of TotalSegmentator's
spine report (Wasserthal et al. 2023, ``spine_report/measure_verte_height.py``,
``MEASUREMENT_POSITIONS = [0.15, 0.5, 0.85]``, 15 % = posterior, 85 % = anterior), which keep the
lines off the rounded rims of the body. Each height is the median over a 3 x 3 patch of parallel
lines (2 mm apart right-left, 1.5 mm anterior-posterior), so neither one voxel of segmentation
noise nor the voxel staircase of a tilted endplate decides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spinekit.io import Volume
from spinekit.morphometry.geometry import PLANE_STEP_MM, line_extents, orthonormal_in_plane, plane_grid, sample

#: Fractions of the depth (posterior -> anterior) where heights are taken, and their names.
POSITIONS: dict[str, float] = {"posterior": 0.15, "middle": 0.50, "anterior": 0.85}
#: Right-left offsets (mm) of the parallel lines whose median is reported.
LATERAL_OFFSETS_MM = (-2.0, 0.0, 2.0)
#: Anterior-posterior offsets (mm) of the parallel lines around each measurement position.
DEPTH_OFFSETS_MM = (-1.5, 0.0, 1.5)


@dataclass
class HeightResult:
    """Heights (mm) with the measured segments (LPS start/end) and the depth line."""

    heights: dict[str, float] = field(default_factory=dict)
    segments: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    depth_mm: float = float("nan")
    depth_segment: tuple[np.ndarray, np.ndarray] | None = None
    reason: str = ""


def heights_along(
    mask: Volume,
    centre: np.ndarray,
    superior: np.ndarray,
    anterior: np.ndarray,
    right: np.ndarray,
    positions: dict[str, float] | None = None,
    lateral_offsets: tuple[float, ...] = LATERAL_OFFSETS_MM,
    half_length_mm: float = 80.0,
) -> HeightResult:
    """Heights of ``mask`` (float 0/1 volume) along ``superior`` at fractions of its depth along ``anterior``.

    Args:
        mask: binary mask as a float volume (a crop is fine: only its geometry is used).
        centre: LPS point inside the structure through which the depth line runs.
        superior, anterior, right: unit LPS vectors of the structure's frame.
        positions: name -> fraction of depth from the posterior end (default :data:`POSITIONS`).
        lateral_offsets: right-left offsets (mm) of parallel lines; the median height is reported.
    """
    positions = POSITIONS if positions is None else positions
    result = HeightResult(heights={name: float("nan") for name in positions})
    low, high = line_extents(mask, centre[None, :], anterior, half_length_mm)
    if not np.isfinite(low[0]) or not np.isfinite(high[0]):
        result.reason = "depth line through the centroid does not cross the mask"
        return result
    posterior_end = centre + low[0] * anterior
    anterior_end = centre + high[0] * anterior
    result.depth_mm = float(high[0] - low[0])
    result.depth_segment = (posterior_end, anterior_end)
    offsets = np.asarray(lateral_offsets, dtype=float)
    for name, fraction in positions.items():
        point = posterior_end + fraction * (anterior_end - posterior_end)
        # A 3 x 3 patch of parallel lines (right-left x anterior-posterior) averages out the voxel staircase
        # of surfaces nearly parallel to the grid, which moves a single line's crossing by up to half a voxel.
        lateral = np.repeat(offsets, len(DEPTH_OFFSETS_MM))
        depth = np.tile(np.asarray(DEPTH_OFFSETS_MM), len(offsets))
        points = point[None, :] + lateral[:, None] * right[None, :] + depth[:, None] * anterior[None, :]
        lo, hi = line_extents(mask, points, superior, half_length_mm)
        extent = hi - lo
        if np.all(~np.isfinite(extent)):
            result.reason = f"no boundary found along the {name} height line"
            continue
        result.heights[name] = float(np.nanmedian(extent))
        middle = int(np.argmin(np.abs(lateral) + np.abs(depth)))
        if np.isfinite(extent[middle]):
            result.segments[name] = (point + lo[middle] * superior, point + hi[middle] * superior)
    return result


def section_area(
    mask: Volume, centre: np.ndarray, normal: np.ndarray, half_size_mm: float = 60.0, step_mm: float = PLANE_STEP_MM
) -> tuple[float, np.ndarray | None, bool]:
    """Area (mm^2) of ``mask`` on the plane through ``centre`` perpendicular to ``normal``.

    The plane is resampled at ``step_mm`` with linear interpolation and thresholded at 0.5.

    Returns:
        (area, LPS centroid of the section or None, True when the section reaches the sampled square's edge)
    """
    u, v = orthonormal_in_plane(np.asarray(normal, float), np.array([1.0, 0.0, 0.0]))
    grid, _ = plane_grid(np.asarray(centre, float), u, v, half_size_mm, step_mm)
    inside = sample(mask, grid) >= 0.5
    area = float(inside.sum()) * step_mm * step_mm
    if not inside.any():
        return area, None, False
    at_edge = bool(inside[0].any() or inside[-1].any() or inside[:, 0].any() or inside[:, -1].any())
    return area, grid[inside].mean(axis=0), at_edge


def gaps_along(
    upper: Volume,
    lower: Volume,
    points: np.ndarray,
    axis: np.ndarray,
    half_length_mm: float = 40.0,
    step_mm: float = 0.1,
) -> np.ndarray:
    """Distance (mm) along ``axis`` from ``lower``'s top surface to ``upper``'s bottom surface, per point.

    Each line runs through a point between the two structures; the nearest crossing of ``upper``
    above and of ``lower`` below are interpolated at the 0.5 level. NaN where either is missed.
    """
    points = np.atleast_2d(np.asarray(points, float))
    t = np.arange(-half_length_mm, half_length_mm + step_mm / 2, step_mm)
    samples = points[:, None, :] + t[None, :, None] * axis[None, None, :]
    values_up = sample(upper, samples)
    values_low = sample(lower, samples)
    centre = len(t) // 2
    gaps = np.full(len(points), np.nan)
    for n in range(len(points)):
        above = np.nonzero(values_up[n, centre:] >= 0.5)[0]
        below = np.nonzero(values_low[n, : centre + 1] >= 0.5)[0]
        if above.size == 0 or below.size == 0:
            continue
        a = centre + int(above[0])
        b = int(below[-1])
        if a == 0 or b + 1 >= len(t) or a <= b:
            continue
        top = _crossing_value(t[a - 1], t[a], values_up[n, a - 1], values_up[n, a])
        bottom = _crossing_value(t[b], t[b + 1], values_low[n, b], values_low[n, b + 1])
        gaps[n] = top - bottom
    return gaps


def _crossing_value(t0: float, t1: float, v0: float, v1: float) -> float:
    if v1 == v0:
        return 0.5 * (t0 + t1)
    return float(t0 + (0.5 - v0) * (t1 - t0) / (v1 - v0))
