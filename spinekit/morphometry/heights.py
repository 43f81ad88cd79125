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
#: Anterior-posterior offsets (mm) of the parallel lines around each measurement position (register module).
DEPTH_OFFSETS_MM = (-1.5, 0.0, 1.5)
#: Lateral offsets (mm) of the lines of the endplate fits.
FIT_LATERAL_MM = (-4.0, -2.0, 0.0, 2.0, 4.0)
#: Half-width (mm) along the depth of the lines whose departure from the fitted plane is tested.
LOCAL_WINDOW_MM = 2.0
#: Departure (in staircase steps) from the plane beyond which the local surface is taken as real shape.
STAIRCASE_TOLERANCE = 0.75
#: Part of the depth at either end (rounded rim) left out of the endplate fits.
RIM_FRACTION = 0.08
#: Spacing (mm) of the fitted lines along the depth.
FIT_STEP_MM = 0.5
#: Fewest lines for a surface fit (else the median of the lines is used).
MIN_FIT_LINES = 8


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
    window_mm: float | None = None,
) -> HeightResult:
    """Heights of ``mask`` (float 0/1 volume) along ``superior`` at fractions of its depth along ``anterior``.

    Each height is the distance between the two end surfaces on the line through the measurement
    point, with each surface a least-squares fit ``s = a + b*depth + c*depth^2 + d*lateral`` to the
    boundary crossings of parallel lines within ``window_mm`` (depth) and ``lateral_offsets`` of the
    point. A voxelised surface a few degrees off the grid is a staircase whose steps are
    ``spacing / tan(tilt)`` long (23 mm at 2.5 degrees, 1 mm voxels); a single line reads it up to
    half a voxel off per surface, and the fit over the window averages the steps. The quadratic term
    keeps a concave (biconcave) endplate's depth at the middle line.

    Args:
        mask: binary mask as a float volume (a crop is fine: only its geometry is used).
        centre: LPS point inside the structure through which the depth line runs.
        superior, anterior, right: unit LPS vectors of the structure's frame.
        positions: name -> fraction of depth from the posterior end (default :data:`POSITIONS`).
        lateral_offsets: right-left offsets (mm) of the parallel lines.
        window_mm: half-width (mm) of the depth window; default :data:`WINDOW_FRACTION` of the depth.
    """
    positions = POSITIONS if positions is None else positions
    result = HeightResult(heights={name: float("nan") for name in positions})
    low, high = line_extents(mask, centre[None, :], anterior, half_length_mm)
    if not np.isfinite(low[0]) or not np.isfinite(high[0]):
        result.reason = "depth line through the centroid does not cross the mask"
        return result
    posterior_end = centre + low[0] * anterior
    anterior_end = centre + high[0] * anterior
    depth = float(high[0] - low[0])
    result.depth_mm = depth
    result.depth_segment = (posterior_end, anterior_end)
    # One grid of lines parallel to the axis over the central depth (off the rounded rims), +-4 mm laterally.
    dy_all = np.arange(RIM_FRACTION * depth, (1 - RIM_FRACTION) * depth + 1e-9, FIT_STEP_MM)
    lateral_set = np.asarray(FIT_LATERAL_MM, dtype=float)
    dy = np.repeat(dy_all, len(lateral_set))
    dx = np.tile(lateral_set, len(dy_all))
    points = posterior_end[None, :] + dx[:, None] * right[None, :] + dy[:, None] * anterior[None, :]
    lo, hi = line_extents(mask, points, superior, half_length_mm)
    step = staircase_step_mm(mask, superior)
    window = LOCAL_WINDOW_MM if window_mm is None else window_mm
    for name, fraction in positions.items():
        along = fraction * depth
        point = posterior_end + along * anterior
        top = _surface_at(hi, dy, dx, along, window, step)
        bottom = _surface_at(lo, dy, dx, along, window, step)
        if not (np.isfinite(top) and np.isfinite(bottom)):
            result.reason = f"no boundary found along the {name} height line"
            continue
        result.heights[name] = float(top - bottom)
        result.segments[name] = (point + bottom * superior, point + top * superior)
    return result


def staircase_step_mm(volume: Volume, normal: np.ndarray) -> float:
    """Height (mm) of one step of the voxel staircase of a surface with this normal: the spacing along it."""
    along_axes = volume.direction.T @ np.asarray(normal, dtype=float)
    return float(np.linalg.norm(np.asarray(volume.spacing) * along_axes))


def _robust_plane(values: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Least-squares plane ``a + b dy + c dx`` with two passes of outlier rejection; (coefficients, inliers)."""
    ok = np.isfinite(values)
    if ok.sum() < MIN_FIT_LINES or len(np.unique(np.round(dy[ok], 6))) < 3:
        return None
    design = np.stack([np.ones_like(dy), dy, dx], axis=1)
    coef = np.zeros(3)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[ok], values[ok], rcond=None)
        residual = values - design @ coef
        mad = 1.4826 * float(np.median(np.abs(residual[ok])))
        keep = np.isfinite(values) & (np.abs(np.nan_to_num(residual, nan=np.inf)) <= max(1.0, 3.0 * mad))
        if keep.sum() < MIN_FIT_LINES or np.array_equal(keep, ok):
            break
        ok = keep
    return coef, ok


def _surface_at(values: np.ndarray, dy: np.ndarray, dx: np.ndarray, at: float, window: float, step: float) -> float:
    """Surface position on the line at depth ``at`` (mid-sagittal): a plane fit, or the local surface.

    The plane fitted over the whole central depth averages the voxel staircase; where the lines within
    ``window`` of the point depart from it by more than :data:`STAIRCASE_TOLERANCE` steps (a real
    concavity or notch, not quantisation), their mean is used instead.
    """
    near = np.abs(dy - at) <= window
    local_ok = near & np.isfinite(values)
    fit = _robust_plane(values, dy, dx)
    if fit is None:
        return float(np.median(values[local_ok])) if local_ok.any() else float("nan")
    coef, _inliers = fit
    plane_here = float(coef[0] + coef[1] * at)
    if not local_ok.any():
        return plane_here
    residual = float(np.mean(values[local_ok] - (coef[0] + coef[1] * dy[local_ok] + coef[2] * dx[local_ok])))
    if abs(residual) > STAIRCASE_TOLERANCE * step:
        return plane_here + residual
    return plane_here


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


def endplate_normals(
    mask: Volume,
    result: HeightResult,
    superior: np.ndarray,
    anterior: np.ndarray,
    right: np.ndarray,
    fraction: float = 0.3,
    lines: int = 7,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Cranially pointing unit normals of the superior and inferior end surfaces of ``mask``.

    Least-squares planes through the crossings of a ``lines`` x ``lines`` grid of lines parallel to
    ``superior`` over the central +-``fraction`` of the depth (both ways), off the rounded rims, as
    the endplates are traced in manual Cobb measurement (Cobb 1948; Vrtovec et al. 2009, Eur Spine J
    18:593). None when the depth line or too many lines miss the mask.
    """
    if result.depth_segment is None or not np.isfinite(result.depth_mm):
        return None
    half = fraction * result.depth_mm
    offsets = np.linspace(-half, half, lines)
    a, r = np.meshgrid(offsets, offsets, indexing="ij")
    centre = 0.5 * (result.depth_segment[0] + result.depth_segment[1])
    points = centre + a.reshape(-1, 1) * anterior + r.reshape(-1, 1) * right
    low, high = line_extents(mask, points, superior)
    normals = []
    for t in (high, low):
        surface = points + t[:, None] * superior
        surface = surface[np.isfinite(t)]
        if len(surface) < lines * lines // 2:
            return None
        _u, _s, vt = np.linalg.svd(surface - surface.mean(axis=0))
        normal = vt[-1]
        normals.append(normal * np.sign(np.dot(normal, superior)))
    return normals[0], normals[1]
