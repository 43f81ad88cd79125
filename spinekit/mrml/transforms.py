"""Linear transforms from LPS matrices and ITK transform files to Slicer transform nodes.

Conventions (the part that is easy to get wrong):

* ``matrix_lps_to_transform_node(M)``: ``M`` moves points, LPS to LPS, the way the node will move the
  nodes placed under it. Slicer calls that direction "to parent", so the node holds
  ``TransformToParent = F M F`` with ``F = diag(-1, -1, 1, 1)``.
* ITK / SimpleITK transforms (``.tfm``, ``.h5``) are *resampling* transforms: they map a point of the
  fixed image to the corresponding point of the moving image (ITK Software Guide, "Registration"),
  in LPS. Slicer reads such a file as "transform from parent" (vtkMRMLTransformStorageNode), which is
  the same thing: placing the *moving* image under the node brings it onto the fixed image. So after
  ``spinekit register`` writes ``L4.tfm`` (fixed = baseline, moving = follow-up), put the follow-up
  volume under the node to see it aligned to baseline at L4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from spinekit.errors import ImageReadError
from spinekit.mrml.geometry import from_vtk_matrix, matrix_lps_to_ras, to_vtk_matrix


def matrix_lps_to_transform_node(
    matrix4x4_lps: np.ndarray, scene: slicer.vtkMRMLScene, name: str = "transform"
) -> slicer.vtkMRMLLinearTransformNode:
    """A linear transform node that moves child points by ``matrix4x4_lps`` (a map between LPS points)."""
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(to_vtk_matrix(matrix_lps_to_ras(matrix4x4_lps)))
    return node


def transform_node_to_matrix_lps(node: slicer.vtkMRMLTransformNode) -> np.ndarray:
    """The 4x4 LPS map by which ``node`` moves child points (inverse of :func:`matrix_lps_to_transform_node`)."""
    matrix = vtk.vtkMatrix4x4()
    if not node.GetMatrixTransformToParent(matrix):
        raise ImageReadError(f"transform {node.GetName()!r} is not linear; sample it with a grid instead")
    return matrix_lps_to_ras(from_vtk_matrix(matrix))


def sitk_transform_file_to_node(
    path: str | Path, scene: slicer.vtkMRMLScene, name: str | None = None
) -> slicer.vtkMRMLTransformNode:
    """Load an ITK transform file (``.tfm``, ``.txt``, ``.h5``, ``.mat``) as Slicer does.

    Uses Slicer's own reader (``vtkMRMLTransformStorageNode``), which converts LPS to RAS and stores the
    ITK fixed->moving map as "transform from parent" (see the module docstring). Linear files give a
    ``vtkMRMLLinearTransformNode``; B-spline or displacement-field files a ``vtkMRMLTransformNode``.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"transform file {path} does not exist")
    node_class = "vtkMRMLLinearTransformNode" if _is_linear(path) else "vtkMRMLTransformNode"
    node = scene.AddNewNodeByClass(node_class, name or path.name.split(".")[0])
    storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise ImageReadError(f"{path} is not an ITK transform file Slicer can read (.tfm, .txt, .h5, .mat expected)")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def _is_linear(path: Path) -> bool:
    """True when SimpleITK reads the file as a chain of linear (matrix + offset) transforms."""
    import SimpleITK as sitk

    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError:
        return True  # let Slicer's reader report the problem
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        parts = [composite.GetNthTransform(i) for i in range(composite.GetNumberOfTransforms())]
    else:
        parts = [transform]
    return all(part.IsLinear() for part in parts)
