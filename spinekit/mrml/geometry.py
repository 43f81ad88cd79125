"""LPS <-> RAS conversion: the one place where it is written down.

DICOM/ITK patient space is LPS (x to the patient's left, y posterior, z superior); Slicer's world is RAS.
They differ by ``F = diag(-1, -1, 1)``: ``p_ras = F @ p_lps``. A 4x4 map ``M`` between LPS points becomes
``F4 @ M @ F4`` between RAS points, with ``F4 = diag(-1, -1, 1, 1)`` (F is its own inverse).
"""

from __future__ import annotations

import numpy as np
import vtk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
LPS_TO_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """Points ``(..., 3)`` from LPS to RAS millimetres."""
    return np.asarray(points, dtype=float) @ LPS_TO_RAS


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """Points ``(..., 3)`` from RAS to LPS millimetres (the same flip)."""
    return np.asarray(points, dtype=float) @ LPS_TO_RAS


def matrix_lps_to_ras(matrix_lps: np.ndarray) -> np.ndarray:
    """A 4x4 homogeneous map between LPS points as the same map between RAS points."""
    matrix = np.asarray(matrix_lps, dtype=float)
    if matrix.shape != (4, 4):
        raise ValueError(f"a 4x4 homogeneous matrix is needed, got shape {matrix.shape}")
    return LPS_TO_RAS_4 @ matrix @ LPS_TO_RAS_4


def to_vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    """numpy 4x4 to ``vtkMatrix4x4``."""
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            result.SetElement(row, col, float(matrix[row, col]))
    return result


def from_vtk_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """``vtkMatrix4x4`` to numpy 4x4."""
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)])


def ijk_to_ras_matrix(spacing, origin_lps, direction_lps) -> np.ndarray:
    """IJK->RAS 4x4 of a grid given in LPS (spacing per i/j/k, origin, direction columns)."""
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ np.asarray(direction_lps, dtype=float) @ np.diag(np.asarray(spacing, dtype=float))
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(origin_lps, dtype=float)
    return matrix
