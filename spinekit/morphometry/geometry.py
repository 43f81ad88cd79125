"""Physical-space sampling of label masks: crops, line extents and oblique plane sections.

Every routine maps LPS millimetres to continuous voxel indices with the volume's own origin,
spacing and direction (``Volume.lps_to_index``), so oblique grids and non-identity origins give
the same answer as axis-aligned ones. Sub-voxel boundaries come from linear interpolation of the
binary mask and its 0.5 crossing, which for a voxelised object lies on the voxel faces
(the same criterion as TotalSegmentator's spine report, Wasserthal et al. 2023, ``find_axis_intersections``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spinekit.io import Volume

#: Step (mm) between samples along a measurement line; crossings are then interpolated linearly (the
#: mask is smoothed over ~2 voxels, so a quarter-millimetre chord moves a crossing by < 0.01 mm).
LINE_STEP_MM = 0.25
#: In-plane pixel size (mm) of oblique sections used for areas (fine enough for < 1 % area error at 1 mm voxels).
PLANE_STEP_MM = 0.5
#: Gaussian sigma (voxels) applied to masks before measuring heights (see :func:`crop_mask`).
SMOOTH_VOXELS = 0.8


@dataclass(frozen=True)
class Crop:
    """A sub-volume of one label's bounding box (plus margin), with its own geometry."""

    volume: Volume  # float32 mask (1 inside) on the cropped grid
    touches_border: bool  # the label reaches the outermost voxel layer of the full image


def label_slices(array: np.ndarray) -> dict[int, tuple[slice, slice, slice]]:
    """Bounding boxes (k, j, i slices) of every positive label value."""
    array = np.asarray(array)
    if array.size == 0 or array.max(initial=0) <= 0:
        return {}
    boxes = ndimage.find_objects(array.astype(np.int32, copy=False))
    return {value: box for value, box in enumerate(boxes, start=1) if box is not None}


def crop_mask(
    volume: Volume, mask: np.ndarray, box: tuple[slice, ...] | None = None, margin: int = 3, smooth: float = 0.0
) -> Crop:
    """Crop a boolean mask (full grid) to its bounding box plus ``margin`` voxels, keeping geometry.

    ``smooth`` > 0 applies a Gaussian of that many voxels (sigma) to the 0/1 mask: the 0.5 level of the
    smoothed mask follows a tilted surface instead of its voxel staircase. Linear interpolation of
    the raw staircase moves the 0.5 crossing by up to -0.25 voxel per surface at 45 degrees to the
    grid (measured on tilted slabs: -0.49 mm bias for a 21 mm slab at 1 mm voxels, -0.01 mm after
    smoothing with sigma 0.8 voxel).
    """
    if box is None:
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
    shape = mask.shape
    touches = any(sl.start == 0 or sl.stop == n for sl, n in zip(box, shape, strict=True))
    # The margin is padded with zeros where it runs past the array: a mask of n voxels must keep empty voxels
    # on both sides, or its 0.5 crossing falls on the outermost voxel centre and the extent reads (n - 1) x spacing
    # instead of n x spacing (one voxel short).
    lo = [sl.start - margin for sl in box]
    hi = [sl.stop + margin for sl in box]
    clip_lo = [max(0, a) for a in lo]
    clip_hi = [min(n, b) for b, n in zip(hi, shape, strict=True)]
    sub = mask[clip_lo[0] : clip_hi[0], clip_lo[1] : clip_hi[1], clip_lo[2] : clip_hi[2]].astype(np.float32)
    pad = [(a - b, c - d) for a, b, c, d in zip(clip_lo, lo, hi, clip_hi, strict=True)]
    if any(p for pair in pad for p in pair):
        sub = np.pad(sub, pad)
    if smooth > 0:
        sub = ndimage.gaussian_filter(sub, smooth, mode="constant")
    origin = volume.index_to_lps(np.array([lo[2], lo[1], lo[0]], dtype=float))
    return Crop(Volume(sub, volume.spacing, origin, volume.direction), touches)


def voxel_points_lps(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """LPS positions (n, 3) of the voxel centres where ``mask`` is true."""
    k, j, i = np.nonzero(mask)
    return volume.index_to_lps(np.stack([i, j, k], axis=1).astype(float))


def array_coordinates(volume: Volume, points_lps: np.ndarray) -> np.ndarray:
    """Continuous array coordinates ``(3, ...)`` in (k, j, i) order of LPS points (any leading shape).

    Same mapping as ``Volume.lps_to_index`` written as three broadcast products: a tall ``(n, 3) @ (3, 3)``
    goes through BLAS with a thread start-up per call, 3-4x slower on the plane and line grids used here.
    """
    points = np.asarray(points_lps, dtype=float)
    scale = volume.direction / np.asarray(volume.spacing)[None, :]  # LPS offset -> (i, j, k) index
    offset = points - np.asarray(volume.origin)
    x, y, z = offset[..., 0], offset[..., 1], offset[..., 2]
    return np.stack([x * scale[0, a] + y * scale[1, a] + z * scale[2, a] for a in (2, 1, 0)])


def sample(volume: Volume, points_lps: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Values of ``volume`` at LPS points (any leading shape), linear (order 1) or nearest (order 0)."""
    points = np.asarray(points_lps, dtype=float)
    coords = array_coordinates(volume, points).reshape(3, -1)
    if order == 0:
        return sample_nearest(volume.array, coords, cval).reshape(points.shape[:-1])
    # "grid-constant" interpolates towards ``cval`` over the half voxel past the outermost centre (scipy's
    # "constant" returns cval there outright, moving a boundary on the array edge inwards by half a voxel).
    values = ndimage.map_coordinates(
        volume.array, coords, order=order, mode="grid-constant", cval=cval, prefilter=False
    )
    return values.reshape(points.shape[:-1])


def sample_nearest(array: np.ndarray, coords: np.ndarray, cval: float = 0) -> np.ndarray:
    """Nearest-neighbour values of ``array`` at array coordinates ``(3, n)``; ``cval`` outside the grid."""
    index = np.rint(coords).astype(np.intp)
    shape = np.asarray(array.shape)[:, None]
    inside = np.all((index >= 0) & (index < shape), axis=0)
    out = np.full(index.shape[1], cval, dtype=array.dtype)
    out[inside] = array[index[0, inside], index[1, inside], index[2, inside]]
    return out


def line_extents(
    mask: Volume,
    points_lps: np.ndarray,
    direction: np.ndarray,
    half_length_mm: float = 80.0,
    step_mm: float = LINE_STEP_MM,
    search_mm: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (mm) to the two boundary crossings of lines through ``points`` along ``direction``.

    For each line the run of inside samples (interpolated mask >= 0.5) that contains the point is
    used; when the point itself lies outside (a concave boundary) the nearest run within
    ``search_mm`` is used. Returns ``(low, high)`` with ``low <= 0 <= high`` in the usual case and NaN
    where the line misses the mask. The extent along the line is ``high - low``.
    """
    points = np.atleast_2d(np.asarray(points_lps, dtype=float))
    direction = np.asarray(direction, dtype=float)
    direction = direction / np.linalg.norm(direction)
    t = np.arange(-half_length_mm, half_length_mm + step_mm / 2, step_mm)
    samples = points[:, None, :] + t[None, :, None] * direction[None, None, :]
    values = sample(mask, samples)
    inside = values >= 0.5
    low = np.full(len(points), np.nan)
    high = np.full(len(points), np.nan)
    centre = len(t) // 2
    reach = int(round(search_mm / step_mm))
    for n in range(len(points)):
        row = inside[n]
        if not row.any():
            continue
        start = centre
        if not row[centre]:
            window = np.nonzero(row[max(0, centre - reach) : centre + reach + 1])[0]
            if window.size == 0:
                continue
            candidates = window + max(0, centre - reach)
            start = int(candidates[np.argmin(np.abs(candidates - centre))])
        outside = np.nonzero(~row)[0]
        before = outside[outside < start]
        after = outside[outside > start]
        if before.size == 0 or after.size == 0:
            continue  # the run reaches the end of the sampled line: no boundary found
        a, b = before[-1], after[0]
        low[n] = _crossing(t[a], t[a + 1], values[n, a], values[n, a + 1])
        high[n] = _crossing(t[b - 1], t[b], values[n, b - 1], values[n, b])
    return low, high


def _crossing(t0: float, t1: float, v0: float, v1: float) -> float:
    """Position of the 0.5 level between two samples (linear interpolation)."""
    if v1 == v0:
        return 0.5 * (t0 + t1)
    return float(t0 + (0.5 - v0) * (t1 - t0) / (v1 - v0))


def orthonormal_in_plane(normal: np.ndarray, hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane perpendicular to ``normal``; the first close to ``hint``."""
    normal = normal / np.linalg.norm(normal)
    u = hint - np.dot(hint, normal) * normal
    if np.linalg.norm(u) < 1e-6:
        u = np.cross(normal, [1.0, 0.0, 0.0])
        if np.linalg.norm(u) < 1e-6:
            u = np.cross(normal, [0.0, 1.0, 0.0])
    u = u / np.linalg.norm(u)
    v = np.cross(normal, u)
    return u, v


def plane_grid(
    centre: np.ndarray, u: np.ndarray, v: np.ndarray, half_size_mm: float, step_mm: float = PLANE_STEP_MM
) -> tuple[np.ndarray, np.ndarray]:
    """LPS points (n, n, 3) of a square grid in the plane through ``centre`` spanned by ``u`` and ``v``.

    Returns the points and the 1D offsets (mm) along each axis; row index runs along ``v``, column along ``u``.
    """
    offsets = np.arange(-half_size_mm, half_size_mm + step_mm / 2, step_mm)
    grid = centre[None, None, :] + offsets[None, :, None] * u[None, None, :] + offsets[:, None, None] * v[None, None, :]
    return grid, offsets


def inside_grid(volume: Volume, points_lps: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """True where LPS points fall inside the voxel grid (by ``margin`` voxels)."""
    coords = array_coordinates(volume, points_lps)
    upper = np.asarray(volume.array.shape, dtype=float).reshape((3,) + (1,) * (coords.ndim - 1)) - 1 + margin
    return np.all((coords >= -margin) & (coords <= upper), axis=0)


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector
