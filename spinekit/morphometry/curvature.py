"""Spine shape: lumbar lordosis, thoracic kyphosis (Cobb, from fitted endplate planes) and SVA.

Endplate planes are least-squares planes through the body surface points hit by a 7 x 7 grid of
lines parallel to the vertebra axis over the central 60 % of the body (the rim is excluded as in
manual Cobb measurement along the endplate, Cobb 1948; Vrtovec et al. 2009, Eur Spine J 18:593
review of sagittal curvature measures). Angles are measured between the endplate normals projected
onto the sagittal plane of the spine (perpendicular to the mean right-left axis of the frames).
Lordosis L1-S1 follows Vrtovec 2009 (L1 superior to S1 superior endplate); kyphosis T4-T12
(T4 superior to T12 inferior endplate), or the most cranial/caudal thoracic levels in view.
"""

from __future__ import annotations

import math

import numpy as np

from spinekit import labels as lab
from spinekit.io import Volume
from spinekit.morphometry.context import SpineModel
from spinekit.morphometry.geometry import LINE_STEP_MM, line_extents, sample, unit
from spinekit.tables import Measurement, missing

#: Fraction of the body depth (each side of the centroid) covered by the endplate sampling grid.
GRID_FRACTION = 0.3
GRID_LINES = 7


def fit_plane(points: np.ndarray) -> np.ndarray | None:
    """Unit normal of the least-squares plane through ``points`` (None for fewer than 6 points)."""
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) < 6:
        return None
    _u, _s, vt = np.linalg.svd(points - points.mean(axis=0))
    return vt[-1]


def _grid(model: SpineModel, label: int) -> np.ndarray | None:
    frame = model.frames[label]
    result = model.heights.get(label)
    if result is None or not np.isfinite(result.depth_mm):
        return None
    half = GRID_FRACTION * result.depth_mm
    offsets = np.linspace(-half, half, GRID_LINES)
    a, r = np.meshgrid(offsets, offsets, indexing="ij")
    centre = 0.5 * (result.depth_segment[0] + result.depth_segment[1])
    return centre + a.reshape(-1, 1) * frame.anterior + r.reshape(-1, 1) * frame.right


def endplate_normal(model: SpineModel, label: int, which: str) -> np.ndarray | None:
    """Normal (pointing cranially) of the superior or inferior endplate of ``label``'s body."""
    frame = model.frames[label]
    if label == lab.SACRUM:
        return sacral_endplate_normal(model) if which == "superior" else None
    points = _grid(model, label)
    crop = model.bodies.get(label)
    if points is None or crop is None:
        return None
    low, high = line_extents(crop.volume, points, frame.superior)
    t = high if which == "superior" else low
    normal = fit_plane(points + t[:, None] * frame.superior)
    return None if normal is None else normal * np.sign(np.dot(normal, frame.superior))


def _first_entry(mask: Volume, starts: np.ndarray, direction: np.ndarray, length_mm: float = 60.0) -> np.ndarray:
    """Distance along ``direction`` from each start to where the line first enters ``mask`` (NaN if never)."""
    t = np.arange(0.0, length_mm, LINE_STEP_MM)
    values = sample(mask, starts[:, None, :] + t[None, :, None] * direction[None, None, :])
    out = np.full(len(starts), np.nan)
    for n, row in enumerate(values):
        hits = np.nonzero(row >= 0.5)[0]
        if hits.size and hits[0] > 0:
            a = hits[0]
            v0, v1 = row[a - 1], row[a]
            out[n] = t[a - 1] + (0.5 - v0) * (t[a] - t[a - 1]) / (v1 - v0)
    return out


def sacral_endplate_normal(model: SpineModel) -> np.ndarray | None:
    """S1 superior endplate normal: lines cast caudally from the lowest lumbar body onto the sacrum."""
    if lab.SACRUM not in model.bodies:
        return None
    above = [v for v in model.order if v != lab.SACRUM and v in model.heights]
    if not above:
        return None
    upper = above[-1]
    frame = model.frames[upper]
    points = _grid(model, upper)
    if points is None:
        return None
    low, _high = line_extents(model.bodies[upper].volume, points, frame.superior)
    starts = points + (np.nan_to_num(low, nan=0.0) - 0.3)[:, None] * frame.superior
    t = _first_entry(model.bodies[lab.SACRUM].volume, starts, -frame.superior)
    normal = fit_plane(starts - t[:, None] * frame.superior)
    return None if normal is None else normal * np.sign(np.dot(normal, frame.superior))


def sagittal_angle(lower_normal: np.ndarray, upper_normal: np.ndarray, right: np.ndarray) -> float:
    """Signed angle (deg) from ``lower_normal`` to ``upper_normal`` about ``right``, both projected sagittally.

    Positive when the upper normal is rotated posteriorly relative to the lower one (lordosis).
    """
    right = unit(right)
    a = unit(lower_normal - np.dot(lower_normal, right) * right)
    b = unit(upper_normal - np.dot(upper_normal, right) * right)
    return float(np.degrees(np.arctan2(np.dot(np.cross(a, b), right), np.dot(a, b))))


def _spine_right(model: SpineModel) -> np.ndarray:
    return unit(np.mean([f.right for v, f in model.frames.items() if v != lab.SACRUM] or [[-1.0, 0, 0]], axis=0))


def curvature_measurements(model: SpineModel) -> list[Measurement]:
    """Lordosis (endplates and centroid curve), kyphosis and SVA rows."""
    rows: list[Measurement] = []
    right = _spine_right(model)
    lumbar_top = lab.VERTEBRA_LABELS["L1"]
    method = "Cobb angle L1 superior to S1 superior endplate (fitted planes), sagittal projection"
    if lumbar_top not in model.frames or lab.SACRUM not in model.frames:
        absent = [n for n, v in (("L1", lumbar_top), ("S1", lab.SACRUM)) if v not in model.frames]
        rows.append(missing("lumbar spine", 0, "lumbar_lordosis", "deg", method, f"{', '.join(absent)} not in view"))
        rows.append(
            missing(
                "lumbar spine",
                0,
                "lumbar_lordosis_centroid",
                "deg",
                "centroid curve",
                f"{', '.join(absent)} not in view",
            )
        )
    else:
        top = endplate_normal(model, lumbar_top, "superior")
        bottom = endplate_normal(model, lab.SACRUM, "superior")
        if top is None or bottom is None:
            rows.append(missing("lumbar spine", 0, "lumbar_lordosis", "deg", method, "endplate plane not found"))
        else:
            rows.append(
                Measurement("lumbar spine", 0, "lumbar_lordosis", sagittal_angle(bottom, top, right), "deg", method)
            )
        rows.append(_centroid_lordosis(model, right))
    rows.append(_kyphosis(model, right))
    rows.append(_sva(model))
    return rows


def _centroid_lordosis(model: SpineModel, right: np.ndarray) -> Measurement:
    method = "centroid curve: angle between the L2->L1 and L5->L4 body-centroid lines"
    labels = [lab.VERTEBRA_LABELS[n] for n in ("L1", "L2", "L4", "L5")]
    cents = [model.frames[v].body_centroid_lps if v in model.frames else np.full(3, np.nan) for v in labels]
    if not all(np.all(np.isfinite(c)) for c in cents):
        return missing("lumbar spine", 0, "lumbar_lordosis_centroid", "deg", method, "L1, L2, L4 or L5 body missing")
    top = cents[0] - cents[1]
    bottom = cents[2] - cents[3]
    return Measurement("lumbar spine", 0, "lumbar_lordosis_centroid", sagittal_angle(bottom, top, right), "deg", method)


def _kyphosis(model: SpineModel, right: np.ndarray) -> Measurement:
    thoracic = [v for v in model.order if 8 <= v <= 19 and v in model.heights]
    preferred_top = [v for v in thoracic if v >= lab.VERTEBRA_LABELS["T4"]]
    if len(thoracic) < 2:
        return missing(
            "thoracic spine",
            0,
            "thoracic_kyphosis",
            "deg",
            "Cobb angle T4-T12 endplates",
            "fewer than two thoracic vertebrae in view",
        )
    top = preferred_top[0] if preferred_top else thoracic[0]
    bottom = thoracic[-1]
    if top == bottom:
        return missing(
            "thoracic spine",
            0,
            "thoracic_kyphosis",
            "deg",
            "Cobb angle T4-T12 endplates",
            "fewer than two thoracic vertebrae in view",
        )
    names = f"{model.frames[top].name} superior to {model.frames[bottom].name} inferior"
    method = f"Cobb angle {names} endplates (fitted planes), sagittal projection"
    a = endplate_normal(model, top, "superior")
    b = endplate_normal(model, bottom, "inferior")
    if a is None or b is None:
        return missing("thoracic spine", 0, "thoracic_kyphosis", "deg", method, "endplate plane not found")
    return Measurement("thoracic spine", 0, "thoracic_kyphosis", -sagittal_angle(b, a, right), "deg", method)


def _sva(model: SpineModel) -> Measurement:
    method = "C7 centroid plumb line to posterior-superior S1 corner, anterior positive (supine scan)"
    if 7 not in model.frames or lab.SACRUM not in model.frames:
        absent = [n for n, v in (("C7", 7), ("S1", lab.SACRUM)) if v not in model.frames]
        return missing(
            "spine", 0, "sagittal_vertical_axis", "mm", method, f"{', '.join(absent)} not in the field of view"
        )
    sacrum = model.bodies.get(lab.SACRUM)
    if sacrum is None:
        return missing("spine", 0, "sagittal_vertical_axis", "mm", method, "sacrum not found")
    ijk = np.argwhere(sacrum.volume.array >= 0.5)[:, ::-1]
    points = sacrum.volume.index_to_lps(ijk.astype(float))
    top = points[points[:, 2] >= points[:, 2].max() - 10.0]
    corner = top[np.argmax(top[:, 1])]  # most posterior (+y) of the top 10 mm
    c7 = model.frames[7].centroid_lps
    return Measurement("spine", 0, "sagittal_vertical_axis", float(corner[1] - c7[1]), "mm", method)


def lordosis(model: SpineModel) -> float:
    """Convenience: L1-S1 lordosis (deg) or NaN."""
    for row in curvature_measurements(model):
        if row.metric == "lumbar_lordosis":
            return row.value
    return math.nan
