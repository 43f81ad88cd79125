"""The baseline vertebral bodies that registration, simulation and change measures share, and their cut plane.

Bodies and frames come from :func:`spinekit.morphometry.frames.frames_and_bodies` (canal-based separation, one pass
over the map). Morphometry cuts every body off its posterior elements with a plane (the half-space anterior to the
posterior wall, normal to the cut's anterior axis); :class:`BodyCut` recovers that plane from the body mask, so that
the follow-up body is cut where the baseline body was (not re-estimated on a collapsed shape) and a simulated
collapse compresses exactly what the measurement calls the body.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spinekit.io import Volume
from spinekit.labels import SACRUM, VERTEBRA_NAMES

if TYPE_CHECKING:
    from spinekit.morphometry.frames import VertebraFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BodyCut:
    """The plane ``p . normal = offset_mm`` (LPS mm) behind which a vertebra is not body.

    ``normal`` points anterior (into the body); ``offset_mm = -inf`` means no cut (a body-only mask).
    """

    normal: np.ndarray
    offset_mm: float = -math.inf

    def depth_mm(self, points_lps: np.ndarray) -> np.ndarray:
        """Signed distance (mm) of LPS points in front of the plane (negative behind it)."""
        return np.asarray(points_lps, dtype=float) @ self.normal - self.offset_mm


@dataclass
class BaselineBody:
    """One level's baseline body: full-grid mask, morphometry frame, cut plane and why it may be wrong.

    ``flag`` is morphometry's plausibility flag (empty when the body/vertebra volume fraction is plausible), or
    why there is no body (``mask`` None).
    """

    mask: np.ndarray | None
    frame: VertebraFrame
    cut: BodyCut
    flag: str = ""


def cut_normal(frame: VertebraFrame) -> np.ndarray:
    """Unit normal of the plane the body was cut with: the cut's anterior axis made orthogonal to its superior axis.

    (Morphometry orthogonalises the anterior hint against the superior axis before it cuts.)
    """
    superior, anterior = frame.body_cut_axes or (frame.superior, frame.anterior)
    superior = np.asarray(superior, dtype=float) / np.linalg.norm(superior)
    normal = np.asarray(anterior, dtype=float) - np.dot(anterior, superior) * superior
    return normal / np.linalg.norm(normal)


def body_cut(spine: Volume, label: int, body: np.ndarray, frame: VertebraFrame) -> BodyCut:
    """The cut plane between a body mask and the rest of its vertebra (mid-way between the two voxel sets).

    The offset lies half-way between the most posterior body voxel centre and the nearest non-body vertebra voxel
    centre behind it, along :func:`cut_normal`; a body that is its whole vertebra has no cut.
    """
    normal = cut_normal(frame)
    vertebra = np.asarray(spine.array) == label
    body = np.asarray(body, dtype=bool)
    inside = spine.index_to_lps(np.argwhere(body)[:, ::-1].astype(float)) @ normal
    if inside.size == 0:
        return BodyCut(normal)
    outside = spine.index_to_lps(np.argwhere(vertebra & ~body)[:, ::-1].astype(float)) @ normal
    front = float(inside.min())
    behind = outside[outside < front]
    if behind.size == 0:
        return BodyCut(normal)
    return BodyCut(normal, 0.5 * (front + float(behind.max())))


def baseline_bodies(spine: Volume, levels: Iterable[int] | None = None) -> dict[int, BaselineBody]:
    """Body, frame and cut of every vertebra of ``spine`` (or of ``levels``) but the sacrum (no body heights).

    Frames need the neighbours, so all levels are separated; full-grid masks are made for ``levels`` only.

    A level whose posterior elements morphometry could not cut off (a whole deep vertebra), or whose body it could
    not find, gets ``mask=None`` with the reason in ``flag``: its heights would span the arch. A body with an
    implausible volume fraction is kept, with morphometry's flag.
    """
    from spinekit.morphometry.frames import frames_and_bodies
    from spinekit.morphometry.geometry import label_slices

    frames, bodies = frames_and_bodies(spine)
    boxes = label_slices(spine.array)
    out: dict[int, BaselineBody] = {}
    wanted = set(frames) if levels is None else set(levels)
    for label, frame in frames.items():
        if label == SACRUM or label not in wanted:
            continue
        flag = frame.body_flag
        if label not in bodies or (flag and frame.body_method.startswith("whole mask")):
            reason = flag or "vertebral body could not be separated from the posterior elements"
            log.warning("no body for %s: %s", VERTEBRA_NAMES.get(label, label), reason)
            out[label] = BaselineBody(None, frame, BodyCut(cut_normal(frame)), reason)
            continue
        crop, _geometry = bodies[label]
        mask = np.zeros(spine.array.shape, bool)
        mask[boxes[label]] = crop
        out[label] = BaselineBody(mask, frame, body_cut(spine, label, mask, frame), flag)
    return out
