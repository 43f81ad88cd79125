"""Tidy result tables as table nodes, and vertebral centroids as markups (stored in RAS, saved in LPS)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import slicer
import vtk

from spinekit.errors import InputError
from spinekit.mrml.geometry import lps_to_ras, ras_to_lps


def _column_array(series: pd.Series) -> vtk.vtkAbstractArray:
    """A typed VTK column: integers as vtkIntArray/vtkLongLongArray, floats as vtkDoubleArray, else strings."""
    if pd.api.types.is_bool_dtype(series):
        array = vtk.vtkIntArray()
        values = series.astype(int).tolist()
    elif pd.api.types.is_integer_dtype(series):
        array = vtk.vtkLongLongArray() if series.abs().max(skipna=True) > 2**31 - 1 else vtk.vtkIntArray()
        values = series.astype(np.int64).tolist()
    elif pd.api.types.is_float_dtype(series):
        array = vtk.vtkDoubleArray()
        values = series.astype(float).tolist()
    else:
        array = vtk.vtkStringArray()
        values = ["" if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v) for v in series]
    array.SetName(str(series.name))
    array.SetNumberOfValues(len(values))
    for row, value in enumerate(values):
        array.SetValue(row, value)
    return array


def metrics_to_table_node(
    frame: pd.DataFrame, scene: slicer.vtkMRMLScene, name: str = "metrics"
) -> slicer.vtkMRMLTableNode:
    """A table node with one row per row of ``frame`` and one typed column per column (NaN kept as NaN)."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = vtk.vtkTable()
    for column in frame.columns:
        table.AddColumn(_column_array(frame[column]))
    node.SetAndObserveTable(table)
    if hasattr(node, "SetUseColumnTitleAsColumnHeader"):  # Slicer >= 5.7; the older name is deprecated there
        node.SetUseColumnTitleAsColumnHeader(True)
    else:
        node.SetUseColumnNameAsColumnHeader(True)
    return node


def table_node_to_frame(node: slicer.vtkMRMLTableNode) -> pd.DataFrame:
    """A table node back to a DataFrame (column types follow the VTK arrays)."""
    table = node.GetTable()
    data = {}
    for index in range(table.GetNumberOfColumns()):
        column = table.GetColumn(index)
        values = [column.GetValue(row) for row in range(column.GetNumberOfValues())]
        if isinstance(column, vtk.vtkStringArray):
            data[column.GetName()] = pd.Series(values, dtype=object)
        elif isinstance(column, vtk.vtkDataArray) and column.GetDataType() in (vtk.VTK_FLOAT, vtk.VTK_DOUBLE):
            data[column.GetName()] = pd.Series(values, dtype=float)
        else:
            data[column.GetName()] = pd.Series(values, dtype=np.int64)
    return pd.DataFrame(data)


def centroids_to_markups(
    centroids_lps: Mapping[str, np.ndarray], scene: slicer.vtkMRMLScene, name: str = "vertebra centroids"
) -> slicer.vtkMRMLMarkupsFiducialNode:
    """One labelled control point per structure, positions converted LPS -> RAS.

    The node gets a JSON storage node set to the LPS coordinate system, so saving it writes LPS
    coordinates (as ITK tools and spinekit expect) while Slicer holds RAS in memory.
    """
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    for label, point in centroids_lps.items():
        point = np.asarray(point, dtype=float).reshape(-1)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise InputError(f"centroid of {label!r} must be 3 finite LPS coordinates (mm), got {point!r}")
        node.AddControlPoint(*lps_to_ras(point), str(label))
    # Created directly: headless scenes have not registered the markups storage class (the app's logic does).
    storage = scene.AddNode(slicer.vtkMRMLMarkupsJsonStorageNode())
    storage.SetCoordinateSystem(slicer.vtkMRMLStorageNode.CoordinateSystemLPS)
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def markups_to_points_lps(node: slicer.vtkMRMLMarkupsNode) -> list[tuple[str, np.ndarray]]:
    """(label, LPS position in mm) of every control point, parent transforms applied."""
    points = []
    position = [0.0, 0.0, 0.0]
    for index in range(node.GetNumberOfControlPoints()):
        node.GetNthControlPointPositionWorld(index, position)
        points.append((node.GetNthControlPointLabel(index), ras_to_lps(np.array(position))))
    return points
