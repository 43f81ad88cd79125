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
from spinekit.morphometry.separation import find_canal, fraction_flag, max_body_depth, posterior_wall_cut
from spinekit.postprocess import largest_component

log = logging.getLogger(__name__)

#: Patient anterior in LPS (DICOM PS3.3 C.7.6.2.1.1: +y is posterior).
LPS_ANTERIOR = np.array([0.0, -1.0, 0.0])
#: Patient superior in LPS (+z is head-wards).
LPS_SUPERIOR = np.array([0.0, 0.0, 1.0])
#: Largest angle (deg) between the body's principal axis and the neighbour line for the former to be trusted.
#: A body 27 mm high and 35 mm deep has second moments only ~1.7x apart, so pedicle stubs or a wedge tilt its
#: principal axes by 25 degrees on real masks (verse004 T11, L4); segmental lordosis between neighbours stays
#: within ~15 degrees (Damasceno et al. 2006, Spine 31:2125, Table 2).
MAX_AXIS_DEVIATION_DEG = 20.0
#: Fraction of the peak coronal area below which the profile has left the vertebral body.
BODY_PROFILE_DROP = 0.5
#: Minimum number of body voxels for a principal-axis estimate.
MIN_BODY_VOXELS = 30
#: Largest angle (deg) between the body's principal axis and the neighbour line for a second cut across it.
RECUT_DEVIATION_DEG = 10.0
#: Most passes of body separation and anterior-axis estimation (the axis of one pass cuts the body of the next).
FRAME_ITERATIONS = 3


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
        body_method: how the body was separated from the posterior elements.
        body_fraction: body / vertebra volume.
        body_flag: why the body may be wrong (empty when its volume fraction is plausible).
        neighbour_superior: the superior axis from the neighbours' centroids (seed of the endplate fit).
        body_cut_axes: (superior, anterior) the body was cut with (the frame's own axes are refined after the cut).
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
    body_method: str = ""
    body_fraction: float = float("nan")
    body_flag: str = ""
    neighbour_superior: np.ndarray | None = None
    body_cut_axes: tuple[np.ndarray, np.ndarray] | None = None

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


@dataclass
class BodySplit:
    """A vertebral body cut from its vertebra: the mask on the label's crop and how it was found."""

    body: np.ndarray  # boolean, on the crop of the vertebra's bounding box
    sub_volume: Volume  # geometry of that crop
    method: str
    touches: bool
    canal_centre_lps: np.ndarray | None = None
    fraction: float = float("nan")  # body / vertebra volume
    flag: str = ""  # why the body may be wrong (empty when plausible)


def _body_selection(
    spine: Volume, label: int, box: tuple, superior: np.ndarray, anterior: np.ndarray, canal_points: np.ndarray | None
) -> BodySplit:
    """Body of ``label`` on its crop: anterior to the canal label, to the ring's hole, or to the pedicle waist.

    The canal label (60) is used when present; else the canal is found as the hole of the vertebral
    ring (:func:`spinekit.morphometry.separation.find_canal`); else the area profile
    (:func:`split_body`). A body whose volume fraction is implausible for its level is re-cut with the
    profile, and flagged when that is no better.
    """
    sub = spine.array[box] == label
    origin = spine.index_to_lps(np.array([box[2].start, box[1].start, box[0].start], dtype=float))
    sub_volume = Volume(sub, spine.spacing, origin, spine.direction)
    points = voxel_points_lps(sub_volume, sub)
    centroid = points.mean(axis=0)
    superior, anterior, right = _complete(superior, anterior)
    bin_mm = max(1.0, max(spine.spacing))
    canal = None
    canal_centre = None
    if canal_points is not None and len(canal_points):
        heights = (points - centroid) @ superior
        canal_h = (canal_points - centroid) @ superior
        canal = canal_points[(canal_h >= heights.min()) & (canal_h <= heights.max())]
    along = (points - centroid) @ anterior
    depth = float(np.ptp(along))
    if canal is not None and len(canal) >= 10:
        selector, _cut, method = split_body(points, centroid, anterior, spine.voxel_volume_mm3, bin_mm, canal)
        canal_centre = canal.mean(axis=0)
    elif depth <= max_body_depth(label):
        selector = np.ones(len(points), bool)
        method = f"whole mask (body-only label: {depth:.0f} mm deep)"
    else:
        ring = find_canal(sub_volume.with_array(sub.astype(np.float32)), centroid, superior, anterior, right)
        if ring is not None:
            selector = along > posterior_wall_cut(along, ring.wall_mm, spine.voxel_volume_mm3, bin_mm)
            method = "anterior to the canal (hole of the vertebral ring)"
            canal_centre = ring.centre_lps
        else:
            selector, _cut, method = split_body(points, centroid, anterior, spine.voxel_volume_mm3, bin_mm)
    split = _finish(spine, label, box, sub, sub_volume, points, selector, method, canal_centre, depth)
    if split.flag and not method.startswith("whole mask") and "area profile" not in method:
        selector, _cut, method = split_body(points, centroid, anterior, spine.voxel_volume_mm3, bin_mm)
        fallback = _finish(spine, label, box, sub, sub_volume, points, selector, method, None, depth)
        if not fallback.flag and not method.startswith("whole mask"):
            fallback.method = f"{method} (fallback: {split.flag})"
            return fallback
    return split


def _finish(
    spine: Volume,
    label: int,
    box: tuple,
    sub: np.ndarray,
    sub_volume: Volume,
    points: np.ndarray,
    selector: np.ndarray,
    method: str,
    canal_centre: np.ndarray | None,
    depth_mm: float,
) -> BodySplit:
    body = np.zeros(sub.shape, bool)
    k, j, i = np.nonzero(sub)
    body[k[selector], j[selector], i[selector]] = True
    body = largest_component(body)
    touches = False
    if body.any():
        # The body (not the whole vertebra) reaching the outermost voxel layer truncates its heights.
        for axis, (sl, n) in enumerate(zip(box, spine.array.shape, strict=True)):
            present = np.nonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))[0]
            if sl.start + present[0] == 0 or sl.start + present[-1] == n - 1:
                touches = True
    fraction = float(body.sum()) / max(1, len(points))
    if method.startswith("whole mask"):
        flag = "" if depth_mm <= max_body_depth(label) else "posterior elements could not be separated from the body"
    else:
        flag = fraction_flag(label, fraction)
    return BodySplit(body, sub_volume, method, touches, canal_centre, fraction, flag)


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


def _principal_axis(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Smallest principal axis of a point cloud, signed along ``reference``."""
    centred = points - points.mean(axis=0)
    _values, vectors = np.linalg.eigh(centred.T @ centred / len(points))
    axis = vectors[:, 0]
    return axis * np.sign(np.dot(axis, reference))


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
    # The body is cut with the neighbour-line axis: the body's own principal axes are unstable on coarse or
    # wedged bodies (second moments ~1.7x apart), and a cut that follows them changes the body it is taken from.
    split = None
    for _ in range(FRAME_ITERATIONS):
        split = _body_selection(spine, v, box, superior, anterior, canal_points)
        points = voxel_points_lps(split.sub_volume, split.body)
        if len(points) < MIN_BODY_VOXELS:
            split = None
            break
        # Anterior: from the vertebra centroid to the body centroid (both on the mid-sagittal plane).
        offset = points.mean(axis=0) - centroid
        offset = offset - np.dot(offset, superior) * superior
        if np.linalg.norm(offset) <= 2.0 or np.dot(unit(offset), anterior) <= 0.5:
            break
        previous = anterior
        superior, anterior, right = _complete(superior, unit(offset))
        if np.dot(previous, anterior) > np.cos(np.radians(0.5)):
            break
    cut_axes = None
    if split is not None:
        split = _body_selection(spine, v, box, superior, anterior, canal_points)
        cut_axes = (superior.copy(), anterior.copy())
        touches = split.touches
        points = voxel_points_lps(split.sub_volume, split.body)
        if len(points) >= MIN_BODY_VOXELS:
            body_centroid = points.mean(axis=0)
            body_out = (split.body, split.sub_volume)
            axis = _principal_axis(points, superior0)
            if np.dot(axis, superior0) >= np.cos(np.radians(RECUT_DEVIATION_DEG)):
                # Close to the neighbour line the principal axis is stable: cut once more across it, so that a
                # tilted cut plane does not leave pedicle roots on one endplate's side.
                recut = _body_selection(spine, v, box, axis, anterior, canal_points)
                recut_points = voxel_points_lps(recut.sub_volume, recut.body)
                if len(recut_points) >= MIN_BODY_VOXELS and (not recut.flag or split.flag):
                    split, points = recut, recut_points
                    cut_axes = (axis.copy(), anterior.copy())
                    touches = split.touches
                    body_centroid = points.mean(axis=0)
                    body_out = (split.body, split.sub_volume)
                    axis = _principal_axis(points, superior0)
            if np.dot(axis, superior0) >= np.cos(np.radians(MAX_AXIS_DEVIATION_DEG)):
                superior, anterior, right = _complete(axis, anterior)
                method = "body principal axis"
    frame = VertebraFrame(
        v,
        name,
        centroid,
        body_centroid,
        superior,
        anterior,
        right,
        method,
        touches,
        body_method=split.method if split is not None else "",
        body_fraction=split.fraction if split is not None else float("nan"),
        body_flag=split.flag if split is not None else "vertebral body could not be separated",
        neighbour_superior=superior0,
        body_cut_axes=cut_axes,
    )
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
        superior, anterior = frame.body_cut_axes or (frame.superior, frame.anterior)
        body = _body_selection(spine, frame.label, box, superior, anterior, canal_points).body
    full = np.zeros(spine.array.shape, bool)
    full[box] = body
    return full
