"""Small geometric helpers shared by the registration modules: crops, centroids, distance maps, surface points."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from spinekit.io import Volume


def label_centroid_lps(mask: sitk.Image) -> np.ndarray:
    """Physical centroid (LPS mm) of a binary mask."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask, sitk.sitkUInt8))
    return np.asarray(stats.GetCentroid(1))


def principal_axes(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, principal axes (columns, largest moment first) and principal moments of a binary mask (LPS)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.SetComputeOrientedBoundingBox(False)
    stats.Execute(sitk.Cast(mask, sitk.sitkUInt8))
    centroid = np.asarray(stats.GetCentroid(1))
    # SimpleITK returns the axes as rows, ordered by increasing principal moment.
    axes = np.asarray(stats.GetPrincipalAxes(1)).reshape(3, 3)[::-1].T
    moments = np.asarray(stats.GetPrincipalMoments(1))[::-1]
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1
    return centroid, axes, moments


def crop_to_label(mask: sitk.Image, margin_mm: float) -> sitk.Image:
    """Crop a binary mask to its bounding box plus ``margin_mm`` on every side (padded with 0 past the edge)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask, sitk.sitkUInt8))
    box = stats.GetBoundingBox(1)
    start = np.asarray(box[:3])
    size = np.asarray(box[3:])
    pad = np.ceil(margin_mm / np.asarray(mask.GetSpacing())).astype(int)
    return _crop_padded(sitk.Cast(mask, sitk.sitkUInt8), start - pad, size + 2 * pad)


def crop_like(image: sitk.Image, reference: sitk.Image, default: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto the grid of ``reference`` (identity transform, e.g. a crop of the same grid)."""
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, default, image.GetPixelID())


def _crop_padded(image: sitk.Image, start: np.ndarray, size: np.ndarray) -> sitk.Image:
    full = np.asarray(image.GetSize())
    lower = np.maximum(-start, 0)
    upper = np.maximum(start + size - full, 0)
    if lower.any() or upper.any():
        image = sitk.ConstantPad(image, [int(v) for v in lower], [int(v) for v in upper], 0)
        start = start + lower
    return sitk.RegionOfInterest(image, [int(v) for v in size], [int(v) for v in start])


def signed_distance(mask: sitk.Image, clip_mm: float | None = None) -> sitk.Image:
    """Signed Euclidean distance (mm, negative inside) to the mask's boundary (Maurer 2003, via SimpleITK).

    The mean of the inside and outside maps puts the zero level half-way between boundary voxel centres, which
    removes the half-voxel inward bias of a one-sided map.
    """
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    outside = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    inside = sitk.SignedMaurerDistanceMap(1 - mask, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    distance = sitk.Cast((outside + inside) * 0.5, sitk.sitkFloat32)
    if clip_mm is not None:
        distance = sitk.Clamp(distance, sitk.sitkFloat32, -float(clip_mm), float(clip_mm))
    return distance


def surface_points_lps(mask: sitk.Image) -> np.ndarray:
    """LPS centres (mm) of the mask's boundary voxels (inside voxels with a 6-connected background neighbour)."""
    contour = sitk.BinaryContour(sitk.Cast(mask, sitk.sitkUInt8), fullyConnected=False)
    index = np.argwhere(sitk.GetArrayViewFromImage(contour) > 0)[:, ::-1].astype(float)
    origin = np.asarray(mask.GetOrigin())
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    return origin + (index * np.asarray(mask.GetSpacing())) @ direction.T


def region_around_lps_box(grid: Volume, points_lps: np.ndarray, margin_mm: float = 2.0):
    """The part of ``grid`` that covers ``points_lps`` (+ margin): (array slices, empty sitk reference image).

    Returns ``None`` when the points lie outside the grid.
    """
    index = grid.lps_to_index(points_lps)
    pad = margin_mm / np.asarray(grid.spacing)
    low = np.floor(index.min(axis=0) - pad).astype(int)
    high = np.ceil(index.max(axis=0) + pad).astype(int) + 1
    size_ijk = np.asarray(grid.shape_ijk)
    low = np.clip(low, 0, size_ijk)
    high = np.clip(high, 0, size_ijk)
    if np.any(high <= low):
        return None
    slices = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low[::-1], high[::-1], strict=True))
    reference = sitk.Image([int(v) for v in high - low], sitk.sitkUInt8)
    reference.SetSpacing(grid.spacing)
    reference.SetDirection(tuple(grid.direction.ravel()))
    reference.SetOrigin(tuple(grid.index_to_lps(low.astype(float))))
    return slices, reference


def rotation_angle_deg(transform: sitk.Transform) -> float:
    """Rotation angle (deg) of the linear part of a rigid transform."""
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3) if hasattr(transform, "GetMatrix") else np.eye(3)
    cosine = np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)))


def transform_points(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """Apply a SimpleITK transform to an ``(n, 3)`` array of LPS points."""
    if hasattr(transform, "GetMatrix") and hasattr(transform, "GetCenter"):
        matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
        center = np.asarray(transform.GetCenter())
        translation = np.asarray(transform.GetTranslation())
        return (points - center) @ matrix.T + center + translation
    return np.array([transform.TransformPoint(tuple(float(c) for c in p)) for p in points])
