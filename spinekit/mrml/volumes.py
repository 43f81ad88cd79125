"""spinekit :class:`~spinekit.io.Volume` <-> Slicer volume nodes (scalar, label map) with exact geometry.

A Volume keeps its geometry in LPS (origin, direction columns, spacing); a volume node keeps the same
grid as spacing plus origin and IJK->RAS directions in RAS. The voxel array is shared in the same
``[k, j, i]`` order (VTK image data is i-fastest, like SimpleITK), so only the geometry is flipped.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from spinekit import labels as spine_labels
from spinekit.errors import ImageGeometryError, LabelError
from spinekit.io import Volume
from spinekit.mrml.geometry import LPS_TO_RAS
from spinekit.mrml.terminology import type_modifier_for

#: numpy dtypes that VTK image data cannot hold directly, and what we store them as.
_DTYPE_FALLBACK = {np.dtype(bool): np.uint8, np.dtype(np.float16): np.float32}


def _image_data_from_array(array: np.ndarray) -> vtk.vtkImageData:
    """VTK image data (dimensions i, j, k) holding a deep copy of ``array[k, j, i]``."""
    if array.ndim != 3:
        raise ImageGeometryError(f"a 3D array is needed, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=_DTYPE_FALLBACK.get(array.dtype, array.dtype))
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def array_from_image_data(image: vtk.vtkImageData) -> np.ndarray:
    """A copy of the scalars of ``image`` as ``[k, j, i]`` (the extent need not start at 0)."""
    extent = image.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    scalars = image.GetPointData().GetScalars()
    if scalars is None or min(shape) <= 0:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return numpy_support.vtk_to_numpy(scalars).reshape(shape).copy()


def _direction_matrix_ras(direction_lps: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    direction_ras = LPS_TO_RAS @ np.asarray(direction_lps, dtype=float)
    for row in range(3):
        for col in range(3):
            matrix.SetElement(row, col, float(direction_ras[row, col]))
    return matrix


def set_node_geometry(node: slicer.vtkMRMLVolumeNode, volume: Volume) -> None:
    """Give ``node`` the grid of ``volume`` (origin and directions flipped LPS->RAS)."""
    node.SetSpacing(*volume.spacing)
    node.SetOrigin(*(LPS_TO_RAS @ np.asarray(volume.origin)))
    node.SetIJKToRASDirectionMatrix(_direction_matrix_ras(volume.direction))


def volume_to_node(
    volume: Volume,
    scene: slicer.vtkMRMLScene,
    name: str = "volume",
    node_class: str = "vtkMRMLScalarVolumeNode",
    display: bool = True,
) -> slicer.vtkMRMLScalarVolumeNode:
    """Add ``volume`` to ``scene`` as a volume node with a display node.

    Args:
        volume: image in LPS geometry.
        scene: the MRML scene (``slicer.mrmlScene`` in the application, :func:`spinekit.mrml.new_scene` headless).
        name: node name shown in Slicer.
        node_class: ``vtkMRMLScalarVolumeNode`` or ``vtkMRMLLabelMapVolumeNode``.
        display: create the default display node.
    """
    node = scene.AddNewNodeByClass(node_class, name)
    set_node_geometry(node, volume)
    node.SetAndObserveImageData(_image_data_from_array(volume.array))
    if display:
        node.CreateDefaultDisplayNodes()
    return node


def node_to_volume(node: slicer.vtkMRMLVolumeNode) -> Volume:
    """A volume node back to a :class:`Volume` in LPS (parent transforms are not applied)."""
    image = node.GetImageData()
    if image is None:
        raise ImageGeometryError(f"volume node {node.GetName()!r} has no image data; load or compute the image first")
    if image.GetNumberOfScalarComponents() != 1:
        raise ImageGeometryError(f"volume node {node.GetName()!r} is multi-component; pass a scalar volume")
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    direction_ras = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    return Volume(
        array_from_image_data(image),
        tuple(node.GetSpacing()),
        tuple(LPS_TO_RAS @ np.asarray(node.GetOrigin())),
        LPS_TO_RAS @ direction_ras,
    )


def label_color_table_node(
    scene: slicer.vtkMRMLScene, kind: str = "spine", name: str | None = None
) -> slicer.vtkMRMLColorTableNode:
    """A colour table with every known label of ``kind`` (names, colours, terminology per entry)."""
    values = known_labels(kind)
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name or f"SpineBiomech {kind} labels")
    node.SetTypeToUser()
    node.SetNumberOfColors(max(values) + 1)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for index in range(1, max(values) + 1):
        node.SetColor(index, "", 0.0, 0.0, 0.0, 0.0)  # unused indices stay transparent and unnamed
    for value in values:
        info = spine_labels.label_info(value, kind)
        red, green, blue = (c / 255.0 for c in info.color)
        node.SetColor(value, info.name, red, green, blue, 1.0)
        modifier = type_modifier_for(value, kind)
        modifier_fields = (modifier.scheme, modifier.value, modifier.meaning) if modifier else ("", "", "")
        node.SetTerminology(
            value,
            info.category.scheme, info.category.value, info.category.meaning,
            info.code.scheme, info.code.value, info.code.meaning,
            *modifier_fields,
        )  # fmt: skip
    return node


def known_labels(kind: str) -> list[int]:
    if kind == "spine":
        vertebrae = sorted(spine_labels.VERTEBRA_NAMES)
        discs = [v for v in range(spine_labels.DISC_OFFSET, spine_labels.DISC_OFFSET + 29) if spine_labels.is_disc(v)]
        return vertebrae + [spine_labels.CANAL, spine_labels.CORD] + discs
    if kind == "muscles":
        return sorted(spine_labels.MUSCLES)
    raise LabelError(f"kind must be 'spine' or 'muscles', not {kind!r}")


def labels_to_labelmap_node(
    labels: Volume, scene: slicer.vtkMRMLScene, kind: str = "spine", name: str = "labels"
) -> slicer.vtkMRMLLabelMapVolumeNode:
    """Add a label map as a ``vtkMRMLLabelMapVolumeNode`` coloured and named by :mod:`spinekit.labels`."""
    present = [int(v) for v in np.unique(labels.array) if v != 0]
    known = set(known_labels(kind))
    unknown = sorted(set(present) - known)
    if unknown:
        raise LabelError(
            f"label map holds values {unknown} that are not {kind} labels; convert it first "
            "(spinekit import-seg) or pass the right kind ('spine' or 'muscles')"
        )
    array = labels.array.astype(np.int16)
    node = volume_to_node(labels.with_array(array), scene, name, "vtkMRMLLabelMapVolumeNode", display=False)
    colors = label_color_table_node(scene, kind, f"{name} colors")
    display = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode")
    display.SetAndObserveColorNodeID(colors.GetID())
    node.SetAndObserveDisplayNodeID(display.GetID())
    return node
