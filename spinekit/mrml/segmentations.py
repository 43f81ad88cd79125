"""Label maps <-> segmentation nodes: one segment per label, named, coloured and coded from spinekit.labels.

All segments of a label map share one binary-labelmap layer whose voxel values are our label numbers
(``vtkSegment.SetLabelValue``), which is how Slicer itself stores non-overlapping segments; each segment
also carries its label number and map kind as tags, so conversion back does not depend on display names.
"""

from __future__ import annotations

import logging

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from spinekit import labels as spine_labels
from spinekit.errors import LabelError
from spinekit.io import Volume
from spinekit.mrml.geometry import LPS_TO_RAS
from spinekit.mrml.terminology import parse_terminology_entry, terminology_entry, type_modifier_for
from spinekit.mrml.volumes import array_from_image_data, known_labels

logger = logging.getLogger(__name__)

#: Segment tags holding our label number and map kind ("spine" or "muscles").
LABEL_TAG = "SpineBiomech.Label"
KIND_TAG = "SpineBiomech.Kind"
_KINDS = ("spine", "muscles")


def segment_id_for_label(value: int, kind: str = "spine") -> str:
    """Stable segment ID of a label: its name with spaces and slashes as underscores ("disc_L4_L5")."""
    return spine_labels.label_info(value, kind).name.replace(" ", "_").replace("/", "_")


def oriented_image_from_volume(volume: Volume, dtype=None) -> slicer.vtkOrientedImageData:
    """A ``vtkOrientedImageData`` (RAS geometry) holding a copy of ``volume.array``."""
    array = np.ascontiguousarray(volume.array, dtype=dtype or volume.array.dtype)
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    image.SetSpacing(*volume.spacing)
    image.SetOrigin(*(LPS_TO_RAS @ np.asarray(volume.origin)))
    directions = vtk.vtkMatrix4x4()
    direction_ras = LPS_TO_RAS @ volume.direction
    for row in range(3):
        for col in range(3):
            directions.SetElement(row, col, float(direction_ras[row, col]))
    image.SetDirectionMatrix(directions)
    return image


def labels_to_segmentation_node(
    labels: Volume, scene: slicer.vtkMRMLScene, kind: str = "spine", name: str = "segmentation"
) -> slicer.vtkMRMLSegmentationNode:
    """One segment per label present, with ID, name, colour and terminology from :mod:`spinekit.labels`.

    Args:
        labels: integer label map (spine map or muscle map) in LPS geometry.
        scene: the MRML scene.
        kind: ``"spine"`` (vertebrae, discs, canal, cord) or ``"muscles"``.
        name: node name.

    Raises:
        LabelError: a value in the map is not a label of ``kind``.
    """
    if kind not in _KINDS:
        raise LabelError(f"kind must be 'spine' or 'muscles', not {kind!r}")
    values = sorted((int(v) for v in np.unique(labels.array) if v != 0), key=_anatomical_order)
    infos = {}
    for value in values:
        try:
            infos[value] = spine_labels.label_info(value, kind)
        except LabelError as exc:
            raise LabelError(f"{exc}; convert the map first (spinekit import-seg) or pass the right kind") from None
    image = oriented_image_from_volume(labels, np.int16)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    segmentation.SetSourceRepresentationName(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    segmentation.SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(image),
    )
    for value in values:
        info = infos[value]
        segment = slicer.vtkSegment()
        segment.SetName(info.name)
        segment.SetColor(*(c / 255.0 for c in info.color))
        segment.SetLabelValue(value)
        segment.SetTerminology(terminology_entry(value, kind))
        segment.SetTag(LABEL_TAG, str(value))
        segment.SetTag(KIND_TAG, kind)
        segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), image)
        segmentation.AddSegment(segment, segment_id_for_label(value, kind))
    return node


def _anatomical_order(value: int) -> tuple[int, int]:
    """Segment order: vertebrae and the discs below them cranial to caudal, then everything else by value."""
    order = spine_labels.CRANIOCAUDAL_ORDER
    if value in order:
        return (2 * order.index(value), 0)
    if value - spine_labels.DISC_OFFSET in order:
        return (2 * order.index(value - spine_labels.DISC_OFFSET) + 1, 0)
    return (1000, value)


def _label_of_segment(segment: slicer.vtkSegment, kind: str) -> int:
    """Our label number of a segment: from its tag, else its name, else its terminology code."""
    tag = vtk.reference("")
    if segment.GetTag(LABEL_TAG, tag) and str(tag):
        kind_tag = vtk.reference("")
        if not segment.GetTag(KIND_TAG, kind_tag) or str(kind_tag) in ("", kind):
            return int(str(tag))
    name = segment.GetName()
    for value in _all_labels(kind):
        if spine_labels.label_info(value, kind).name.lower() == name.strip().lower():
            return value
    scheme, code, modifier = parse_terminology_entry(segment.GetTerminology())
    for value in _all_labels(kind):
        info = spine_labels.label_info(value, kind)
        expected_modifier = type_modifier_for(value, kind)
        if (info.code.scheme, info.code.value) == (scheme, code) and (
            expected_modifier is None or expected_modifier.value == modifier
        ):
            return value
    raise LabelError(
        f"segment {name!r} is not a {kind} label (no {LABEL_TAG} tag, unknown name, unknown terminology code "
        f"{scheme}:{code}); rename it to a level such as 'L4' or 'disc L4/L5', or set its terminology"
    )


def _all_labels(kind: str) -> list[int]:
    return known_labels(kind)


def _reference_image(reference: Volume) -> slicer.vtkOrientedImageData:
    return oriented_image_from_volume(reference.with_array(np.zeros(reference.array.shape, np.uint8)))


def segment_mask(node: slicer.vtkMRMLSegmentationNode, segment_id: str, reference: Volume) -> np.ndarray:
    """Boolean mask ``[k, j, i]`` of one segment on the grid of ``reference`` (nearest neighbour)."""
    if node.GetSegmentation().GetSegment(segment_id) is None:
        raise LabelError(f"segmentation {node.GetName()!r} has no segment {segment_id!r}")
    binary = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segment_id, binary)
    extent = binary.GetExtent()
    if extent[0] > extent[1] or binary.GetPointData().GetScalars() is None:
        return np.zeros(reference.array.shape, dtype=bool)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        binary, _reference_image(reference), resampled, False, False
    )
    mask = np.zeros(reference.array.shape, dtype=bool)
    e = resampled.GetExtent()
    if e[0] > e[1]:
        return mask
    values = array_from_image_data(resampled) > 0
    nk, nj, ni = reference.array.shape
    k0, k1 = max(e[4], 0), min(e[5], nk - 1)
    j0, j1 = max(e[2], 0), min(e[3], nj - 1)
    i0, i1 = max(e[0], 0), min(e[1], ni - 1)
    if k0 > k1 or j0 > j1 or i0 > i1:
        return mask
    mask[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = values[
        k0 - e[4] : k1 - e[4] + 1, j0 - e[2] : j1 - e[2] + 1, i0 - e[0] : i1 - e[0] + 1
    ]
    return mask


def segmentation_node_to_labels(node: slicer.vtkMRMLSegmentationNode, reference: Volume, kind: str = "spine") -> Volume:
    """Our label map on the grid of ``reference`` from a segmentation node.

    Segments map to label numbers through their tag, else their name, else their terminology code.
    Where segments overlap, the later segment wins and a warning is logged.

    Raises:
        LabelError: a segment cannot be mapped to a label of ``kind``.
    """
    segmentation = node.GetSegmentation()
    out = np.zeros(reference.array.shape, dtype=np.int16)
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        value = _label_of_segment(segmentation.GetSegment(segment_id), kind)
        mask = segment_mask(node, segment_id, reference)
        overlap = int(np.count_nonzero(mask & (out != 0)))
        if overlap:
            logger.warning("segment %s overlaps earlier segments in %d voxels; it wins there", segment_id, overlap)
        out[mask] = value
    return reference.with_array(out)


def update_segment_from_mask(node: slicer.vtkMRMLSegmentationNode, segment_id: str, mask: Volume) -> None:
    """Replace one segment by ``mask`` (non-zero = inside) and leave every other segment untouched.

    Slicer moves the segment to its own layer where it would overlap others, so no other segment loses voxels.
    """
    segmentation = node.GetSegmentation()
    if segmentation.GetSegment(segment_id) is None:
        known = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        raise LabelError(f"segmentation {node.GetName()!r} has no segment {segment_id!r}; known: {known}")
    image = oriented_image_from_volume(mask.with_array((mask.array != 0).astype(np.uint8)))
    ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    )
    if not ok:
        raise LabelError(f"Slicer refused to update segment {segment_id!r} of {node.GetName()!r}")
