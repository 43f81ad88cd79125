"""Click corrections of a segmentation node: markups clicks (RAS) -> ``InteractiveSession`` (LPS) -> segments.

:class:`SegmentEditorSession` wraps :class:`spinekit.segment.interactive.InteractiveSession` around one volume
node and one segmentation node. A click on a segment is converted from Slicer's RAS to LPS (by
:mod:`spinekit.mrml.geometry`, nowhere else), applied to the segment's label (its ``SpineBiomech.Label`` tag),
and only the segments whose voxels changed are rewritten (:func:`update_segment_from_mask`), so every other
segment stays bit-identical. Undo and redo replay the session's exact voxel diffs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import slicer
import vtk

from spinekit.errors import InputError, LabelError
from spinekit.mrml.geometry import ras_to_lps
from spinekit.mrml.segmentations import (
    KIND_TAG,
    _label_of_segment,
    segmentation_node_to_labels,
    update_segment_from_mask,
)
from spinekit.mrml.volumes import node_to_volume

logger = logging.getLogger(__name__)


def segmentation_kind(node: slicer.vtkMRMLSegmentationNode) -> str:
    """ "spine" or "muscles" from the segments' ``SpineBiomech.Kind`` tag ("spine" when untagged)."""
    segmentation = node.GetSegmentation()
    kinds = set()
    for index in range(segmentation.GetNumberOfSegments()):
        value = vtk.reference("")
        if segmentation.GetNthSegment(index).GetTag(KIND_TAG, value) and str(value):
            kinds.add(str(value))
    if len(kinds) > 1:
        raise LabelError(f"segmentation {node.GetName()!r} mixes spine and muscle segments; correct one map at a time")
    return kinds.pop() if kinds else "spine"


def installed_model(task: str) -> str | None:
    """The shipped network name for ``task`` when its weights are installed, else None (image-driven clicks)."""
    try:
        from spinekit.segment.networks import model_paths
    except ImportError:  # torch/monai not installed: clicks stay image-driven
        return None
    weights, config = model_paths(task, None)
    return task if Path(weights).is_file() and Path(config).is_file() else None


class SegmentEditorSession:
    """Interactive correction of ``segmentation_node`` on the grid of ``volume_node``.

    Args:
        volume_node: the scan (scalar volume node, no parent transform).
        segmentation_node: segments made by :func:`labels_to_segmentation_node` (or named/coded like them).
        kind: "spine" or "muscles"; read from the segments' tags when None.
        model: passed to ``InteractiveSession`` (None = image-driven only, or a shipped model name).

    Raises:
        LabelError: a segment cannot be mapped to a label of ``kind``.
    """

    def __init__(self, volume_node, segmentation_node, kind: str | None = None, model=None, **session_options):
        from spinekit.segment.interactive import InteractiveSession

        self.volume_node = volume_node
        self.segmentation_node = segmentation_node
        self.kind = kind or segmentation_kind(segmentation_node)
        image = node_to_volume(volume_node)
        labels = segmentation_node_to_labels(segmentation_node, image, self.kind)
        self.session = InteractiveSession(image, labels, task=self.kind, model=model, **session_options)
        self._done: list[set[int]] = []  # label values each click changed, parallel to the session's undo stack
        self._undone: list[set[int]] = []

    # --- mapping between segments and labels ------------------------------------------------------------------
    def structure_of(self, segment_id: str) -> int:
        """Our label number of a segment (tag, else name, else terminology code)."""
        segment = self.segmentation_node.GetSegmentation().GetSegment(segment_id)
        if segment is None:
            raise LabelError(f"segmentation {self.segmentation_node.GetName()!r} has no segment {segment_id!r}")
        return _label_of_segment(segment, self.kind)

    def segment_id_of(self, value: int) -> str | None:
        """ID of the segment holding label ``value`` (None when there is none)."""
        segmentation = self.segmentation_node.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            try:
                if _label_of_segment(segmentation.GetNthSegment(index), self.kind) == value:
                    return segmentation.GetNthSegmentID(index)
            except LabelError:
                continue
        return None

    # --- clicks -------------------------------------------------------------------------------------------------
    def add_click(self, point_ras, segment_id: str, positive: bool = True):
        """Correct ``segment_id`` around the RAS point (mm); returns the session's ``ClickResult``.

        Raises:
            InputError: the point is outside the image or not three finite numbers.
        """
        point_lps = ras_to_lps(np.asarray(point_ras, dtype=float).reshape(-1))
        structure = self.structure_of(segment_id)
        result = self.session.add_click(point_lps, structure, positive)
        changed = {structure} if (result.added or result.removed) else set()
        self._done.append(changed)
        self._undone.clear()
        self._write_segments(changed)
        logger.info("click on %s: +%d -%d voxels in %.3f s %s", segment_id, result.added, result.removed,
                    result.seconds, result.note)  # fmt: skip
        return result

    @property
    def can_undo(self) -> bool:
        return self.session.can_undo

    @property
    def can_redo(self) -> bool:
        return self.session.can_redo

    def undo(self) -> bool:
        """Revert the last click in the session and in the segments it changed; False when nothing to undo."""
        if not self.session.undo():
            return False
        changed = self._done.pop() if self._done else set()
        self._undone.append(changed)
        self._write_segments(changed)
        return True

    def redo(self) -> bool:
        """Re-apply the last undone click; False when nothing to redo."""
        if not self.session.redo():
            return False
        changed = self._undone.pop() if self._undone else set()
        self._done.append(changed)
        self._write_segments(changed)
        return True

    def save(self, folder: str | Path) -> Path:
        """Write the corrected case for training (``spinekit.segment.corrections`` folder layout)."""
        return self.session.save(folder)

    def _write_segments(self, values: set[int]) -> None:
        labels = self.session.labels
        for value in sorted(values):
            segment_id = self.segment_id_of(value)
            if segment_id is None:
                raise InputError(f"label {value} has no segment in {self.segmentation_node.GetName()!r}")
            mask = labels.with_array((labels.array == value).astype(np.uint8))
            update_segment_from_mask(self.segmentation_node, segment_id, mask)
