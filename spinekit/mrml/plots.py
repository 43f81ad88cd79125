"""Bar chart of the per-vertebra fracture-risk ratio for Slicer's Plots module."""

from __future__ import annotations

import numpy as np
import pandas as pd
import slicer
import vtk

from spinekit import labels as spine_labels
from spinekit.errors import InputError
from spinekit.mrml.colors import RISK_BANDS, risk_band

#: Default metric name of the load-to-strength ratio in the biomech tables.
RISK_METRIC = "risk_ratio"


def risk_table(frame: pd.DataFrame, task: str, metric: str = RISK_METRIC) -> pd.DataFrame:
    """Per-vertebra ratio for one task, cranial to caudal: columns ``structure, label, ratio, <band> ...``.

    ``frame`` is a tidy table; rows are those with ``metric == metric`` and, when the table has a
    ``task`` column, ``task == task`` (otherwise rows whose ``method`` names the task).
    """
    rows = frame[frame["metric"] == metric]
    if "task" in rows.columns:
        rows = rows[rows["task"] == task]
    elif task:
        rows = rows[rows["method"].astype(str).str.contains(task, regex=False)]
    if rows.empty:
        raise InputError(f"no {metric!r} rows for task {task!r}; run 'spinekit biomech' with that task first")
    order = {value: index for index, value in enumerate(spine_labels.CRANIOCAUDAL_ORDER)}
    rows = rows.assign(_order=rows["label"].map(lambda v: order.get(int(v), 999))).sort_values("_order")
    out = pd.DataFrame(
        {"structure": rows["structure"].astype(str).to_numpy(), "label": rows["label"].astype(int).to_numpy()}
    )
    ratio = rows["value"].astype(float).to_numpy()
    out["ratio"] = ratio
    bands = [risk_band(r) for r in ratio]
    for _, band, _ in RISK_BANDS:
        # One column per band so each band is its own coloured bar series; NaN elsewhere draws no bar.
        out[band] = np.where(np.array(bands) == band, ratio, np.nan)
    return out


def risk_bar_chart(
    frame: pd.DataFrame, scene: slicer.vtkMRMLScene, task: str, metric: str = RISK_METRIC
) -> slicer.vtkMRMLPlotChartNode:
    """A chart node with one bar per vertebra (green/amber/red series by risk band) for ``task``."""
    data = risk_table(frame, task, metric)
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"risk {task} table")
    table = vtk.vtkTable()
    names = vtk.vtkStringArray()
    names.SetName("structure")
    index = vtk.vtkDoubleArray()
    index.SetName("index")
    for position, structure in enumerate(data["structure"]):
        names.InsertNextValue(structure)
        index.InsertNextValue(float(position))
    table.AddColumn(names)
    table.AddColumn(index)
    for _, band, _ in RISK_BANDS:
        column = vtk.vtkDoubleArray()
        column.SetName(band)
        for value in data[band]:
            column.InsertNextValue(float(value) if np.isfinite(value) else 0.0)
        table.AddColumn(column)
    table_node.SetAndObserveTable(table)

    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"risk {task}")
    chart.SetTitle(f"Load / strength ratio, {task}")
    chart.SetXAxisTitle("vertebra")
    chart.SetYAxisTitle("load / strength")
    for _, band, color in RISK_BANDS:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"risk {task} {band}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("index")
        series.SetYColumnName(band)
        series.SetLabelColumnName("structure")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart
