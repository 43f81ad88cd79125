"""Per-vertebra anatomical frames (centroid, superior and anterior axes) in patient LPS millimetres.

The frame of a vertebra is found in two passes:

1. a provisional superior axis from the line through the neighbouring centroids (as in
   TotalSegmentator's spine report, Wasserthal et al. 2023, ``_calculate_axes``) and the patient
   anterior direction (LPS ``-y``) made orthogonal to it;
2. the vertebral body is separated from the posterior elements (:func:`split_body`), and the
   superior axis is replaced by the body's smallest principal axis (the body is wider and deeper
   than it is high in the thoracolumbar spine: lumbar bodies ~45 x 35 x 27 mm, Zhou et al. 2000,
   Eur Spine J 9:242, Table 1), the anterior axis by the direction from the whole-vertebra centroid
   to the body centroid.

Centroids are means of voxel-centre positions mapped through the image's origin, spacing and
direction, never voxel indices (Hess et al. 2023, Pain Med 24:S1 "patient-based space").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spinekit import labels as lab
from spinekit.io import Volume
from spinekit.morphometry.geometry import label_slices, unit, voxel_points_lps

log = logging.getLogger(__name__)

#: Patient anterior in LPS (DICOM PS3.3 C.7.6.2.1.1: +y is posterior).
LPS_ANTERIOR = np.array([0.0, -1.0, 0.0])
#: Patient superior in LPS (+z is head-wards).
LPS_SUPERIOR = np.array([0.0, 0.0, 1.0])
#: Largest angle (deg) between the body's principal axis and the neighbour line for the former to be trusted.
MAX_AXIS_DEVIATION_DEG = 35.0
#: Fraction of the peak coronal area below which the profile has left the vertebral body.
BODY_PROFILE_DROP = 0.5
#: Minimum number of body voxels for a principal-axis estimate.
MIN_BODY_VOXELS = 30


@dataclass(frozen=True)
class VertebraFrame:
    """Anatomical frame of one vertebra, all vectors unit length in LPS.

    Attributes:
        label: VerSe label.
        name: level name ("L4").
        centroid_lps: whole-vertebra centroid (mm).
        body_centroid_lps: vertebral body centroid (mm); NaN when the body cannot be separated.
        superior: caudal -> cranial along the vertebra's own axis.
        anterior: posterior -> anterior, orthogonal to ``superior``.
        right: patient right, completing the frame (``right = superior x anterior``).
        axis_method: how ``superior`` was found.
        touches_border: the label reaches the image border (measures may be truncated).
    """

    label: int
    name: str
    centroid_lps: np.ndarray
    body_centroid_lps: np.ndarray
    superior: np.ndarray
    anterior: np.ndarray
    right: np.ndarray
    axis_method: str = ""
    touches_border: bool = False

    def to_local(self, points_lps: np.ndarray, origin: np.ndarray | None = None) -> np.ndarray:
        """LPS points to (right, anterior, superior) mm relative to ``origin`` (default: body centroid)."""
        origin = self.body_centroid_lps if origin is None else origin
        if not np.all(np.isfinite(origin)):
            origin = self.centroid_lps
        basis = np.stack([self.right, self.anterior, self.superior], axis=1)
        return (np.asarray(points_lps, dtype=float) - origin) @ basis


def _complete(superior: np.ndarray, anterior_hint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    superior = unit(superior)
    anterior = anterior_hint - np.dot(anterior_hint, superior) * superior
    if np.linalg.norm(anterior) < 1e-6:
        anterior = LPS_ANTERIOR - np.dot(LPS_ANTERIOR, superior) * superior
    anterior = unit(anterior)
    # LPS right = -x; with superior = +z and anterior = -y, superior x anterior = (0,0,1) x (0,-1,0) = (1,0,0)
    # is patient left, so right = anterior x superior.
    right = unit(np.cross(anterior, superior))
    return superior, anterior, right


def split_body(
    points_lps: np.ndarray,
    centroid: np.ndarray,
    anterior: np.ndarray,
    voxel_volume: float,
    bin_mm: float,
    canal_points_lps: np.ndarray | None = None,
) -> tuple[np.ndarray, float, str]:
    """Which vertebra voxels belong to the body: those anterior to a cut plane.

    The cut is at the posterior wall of the body: from the canal's anterior boundary when canal
    voxels are given, else from the coronal-area profile along ``anterior`` (area of the mask in
    each plane perpendicular to ``anterior``): walking posteriorly from the profile's peak (the
    body), past the point where the area falls below :data:`BODY_PROFILE_DROP` of the peak, to the
    end of that descent, where the narrow pedicles begin. A body-only mask has no such plateau
    and is kept whole.

    Returns:
        (boolean selector over ``points_lps``, cut position in mm along ``anterior`` from ``centroid``, method)
    """
    a = (points_lps - centroid) @ anterior
    if canal_points_lps is not None and len(canal_points_lps) >= 10:
        canal_a = (canal_points_lps - centroid) @ anterior
        cut = float(np.percentile(canal_a, 98))
        if np.mean(a > cut) > 0.2:
            return a > cut, cut, "anterior to spinal canal label"
    edges = np.arange(a.min() - bin_mm, a.max() + 2 * bin_mm, bin_mm)
    counts, _ = np.histogram(a, edges)
    raw = counts * voxel_volume / bin_mm
    area = ndimage.uniform_filter1d(raw, 3, mode="constant")
    peak = int(np.argmax(area))
    below = np.nonzero(area[:peak] < BODY_PROFILE_DROP * area[peak])[0]
    if below.size == 0:
        return np.ones(len(a), bool), float(a.min()), "whole mask (no posterior elements found)"
    index = int(below[-1])
    while index > 0 and area[index - 1] < area[index]:
        index -= 1
    if area[index] <= 0.02 * area[peak]:
        return np.ones(len(a), bool), float(a.min()), "whole mask (no posterior elements found)"
    # The smoothed minimum lags the wall by a bin or two: step anterior to the first raw bin clearly above
    # the pedicle plateau, so that pedicle stubs are not counted as body.
    plateau = float(np.median(raw[max(0, index - 2) : index + 1]))
    threshold = plateau + 0.1 * (area[peak] - plateau)
    wall = index + 1
    while wall < peak and raw[wall] <= threshold:
        wall += 1
    cut = float(edges[wall])
    return a >= cut, cut, "anterior to narrowest section behind the body (area profile)"


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def _present_vertebrae(boxes: dict[int, tuple]) -> list[int]:
    return [v for v in lab.CRANIOCAUDAL_ORDER if v in boxes]


def _neighbour_axis(centroids: dict[int, np.ndarray], order: list[int], label: int) -> tuple[np.ndarray, str]:
    position = order.index(label)
    up = centroids[order[position - 1]] if position > 0 else None
    down = centroids[order[position + 1]] if position + 1 < len(order) else None
    here = centroids[label]
    if up is not None and down is not None:
        return unit(up - down), "neighbour centroid line"
    if up is not None:
        return unit(up - here), "neighbour centroid line"
    if down is not None:
        return unit(here - down), "neighbour centroid line"
    return LPS_SUPERIOR.copy(), "patient superior (single vertebra)"


def _body_selection(
    spine: Volume, label: int, box: tuple, superior: np.ndarray, anterior: np.ndarray, canal_points: np.ndarray | None
) -> tuple[np.ndarray, tuple, str, bool]:
    """Body mask on the crop of ``label`` plus the crop slices, the method and the border flag."""
    sub = spine.array[box] == label
    origin = spine.index_to_lps(np.array([box[2].start, box[1].start, box[0].start], dtype=float))
    sub_volume = Volume(sub, spine.spacing, origin, spine.direction)
    points = voxel_points_lps(sub_volume, sub)
    centroid = points.mean(axis=0)
    canal = None
    if canal_points is not None and len(canal_points):
        heights = (points - centroid) @ superior
        canal_h = (canal_points - centroid) @ superior
        canal = canal_points[(canal_h >= heights.min()) & (canal_h <= heights.max())]
    selector, _cut, method = split_body(
        points, centroid, anterior, spine.voxel_volume_mm3, max(1.0, max(spine.spacing)), canal
    )
    body = np.zeros(sub.shape, bool)
    k, j, i = np.nonzero(sub)
    body[k[selector], j[selector], i[selector]] = True
    body = _largest_component(body)
    touches = False
    if body.any():
        # The body (not the whole vertebra) reaching the outermost voxel layer truncates its heights.
        for axis, (sl, n) in enumerate(zip(box, spine.array.shape, strict=True)):
            present = np.nonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))[0]
            if sl.start + present[0] == 0 or sl.start + present[-1] == n - 1:
                touches = True
    return body, sub_volume, method, touches


def vertebra_frames(spine: Volume, canal_label: int = lab.CANAL) -> dict[int, VertebraFrame]:
    """Frames of every vertebra present in ``spine`` (VerSe labels), keyed by label.

    Args:
        spine: label map with vertebrae (VerSe numbering), optionally discs and canal.
        canal_label: label of the spinal canal used to cut off the posterior elements when present.
    """
    return frames_and_bodies(spine, canal_label)[0]


def frames_and_bodies(
    spine: Volume, canal_label: int = lab.CANAL
) -> tuple[dict[int, VertebraFrame], dict[int, tuple[np.ndarray, Volume]]]:
    """Frames plus each body's mask on its label's crop (mask, crop geometry); one pass over the map."""
    boxes = label_slices(spine.array)
    order = _present_vertebrae(boxes)
    canal_points = None
    if canal_label in boxes:
        canal_points = voxel_points_lps(spine, spine.array == canal_label)
    centroids = {}
    for v in order:
        box = boxes[v]
        origin = spine.index_to_lps(np.array([box[2].start, box[1].start, box[0].start], dtype=float))
        sub = spine.array[box] == v
        centroids[v] = voxel_points_lps(Volume(sub, spine.spacing, origin, spine.direction), sub).mean(axis=0)
    frames: dict[int, VertebraFrame] = {}
    bodies: dict[int, tuple[np.ndarray, Volume]] = {}
    for v in order:
        frames[v], body = _frame_for(spine, v, boxes[v], centroids, order, canal_points)
        if body is not None:
            bodies[v] = body
    return frames, bodies


def vertebra_frame(spine: Volume, label: int) -> VertebraFrame:
    """Frame of one vertebra (computes neighbours' centroids as needed)."""
    frames = vertebra_frames(spine)
    if label not in frames:
        from spinekit.errors import LabelError

        raise LabelError(f"vertebra label {label} is not in the spine label map (present: {sorted(frames)})")
    return frames[label]


def _frame_for(
    spine: Volume,
    v: int,
    box: tuple,
    centroids: dict[int, np.ndarray],
    order: list[int],
    canal_points: np.ndarray | None,
) -> tuple[VertebraFrame, tuple[np.ndarray, Volume] | None]:
    name = lab.VERTEBRA_NAMES.get(v, str(v))
    superior0, method = _neighbour_axis(centroids, order, v)
    superior, anterior, right = _complete(superior0, LPS_ANTERIOR)
    centroid = centroids[v]
    body_centroid = np.full(3, np.nan)
    touches = False
    body_out = None
    if v == lab.SACRUM:
        return VertebraFrame(v, name, centroid, body_centroid, superior, anterior, right, method, touches), None
    for _ in range(2):
        body, sub_volume, _split, touches = _body_selection(spine, v, box, superior, anterior, canal_points)
        points = voxel_points_lps(sub_volume, body)
        if len(points) < MIN_BODY_VOXELS:
            body_out = None
            break
        body_out = (body, sub_volume)
        body_centroid = points.mean(axis=0)
        centred = points - body_centroid
        _values, vectors = np.linalg.eigh(centred.T @ centred / len(points))
        axis = vectors[:, 0]
        cos = abs(float(np.dot(axis, superior0)))
        if cos >= np.cos(np.radians(MAX_AXIS_DEVIATION_DEG)):
            superior_new = axis * np.sign(np.dot(axis, superior0))
            method = "body principal axis"
        else:
            superior_new = superior0
        offset = body_centroid - centroid
        offset = offset - np.dot(offset, superior_new) * superior_new
        hint = LPS_ANTERIOR
        if np.linalg.norm(offset) > 2.0 and np.dot(unit(offset), LPS_ANTERIOR) > 0.5:
            hint = unit(offset)
        superior, anterior, right = _complete(superior_new, hint)
    if body_out is not None:
        # The returned body is cut with the final axes.
        body, sub_volume, _split, touches = _body_selection(spine, v, box, superior, anterior, canal_points)
        body_out = (body, sub_volume)
    frame = VertebraFrame(v, name, centroid, body_centroid, superior, anterior, right, method, touches)
    return frame, body_out


def body_mask_from_frame(spine: Volume, frame: VertebraFrame, canal_label: int = lab.CANAL) -> np.ndarray:
    """Full-grid boolean body mask of ``frame.label`` using the frame's axes."""
    boxes = label_slices(spine.array)
    if frame.label not in boxes:
        return np.zeros(spine.array.shape, bool)
    canal_points = voxel_points_lps(spine, spine.array == canal_label) if canal_label in boxes else None
    box = boxes[frame.label]
    if frame.label == lab.SACRUM:
        body = spine.array[box] == frame.label
    else:
        body, _sub, _method, _touch = _body_selection(
            spine, frame.label, box, frame.superior, frame.anterior, canal_points
        )
    full = np.zeros(spine.array.shape, bool)
    full[box] = body
    return full
