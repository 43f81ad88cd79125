"""Bar chart of the per-vertebra fracture-risk ratio for Slicer's Plots module."""

from __future__ import annotations

import numpy as np
import pandas as pd
import slicer
import vtk

from spinekit import labels as spine_labels
from spinekit.errors import InputError
from spinekit.mrml.colors import RISK_BANDS, risk_band

#: Columns of ``risk.csv`` written by ``spinekit biomech`` (spinekit.biomech.pipeline.run_biomech): one row per
#: vertebra x task, the ratio in ``factor_of_risk`` and its class in ``class``.
RISK_COLUMNS = ("vertebra", "label", "task", "factor_of_risk")


def risk_tasks(frame: pd.DataFrame) -> list[str]:
    """Task names in ``risk.csv`` in the order the stage solved them."""
    _check_columns(frame)
    return list(dict.fromkeys(frame["task"].astype(str)))


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in RISK_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"the risk table lacks columns {missing}; pass the risk.csv written by 'spinekit biomech'")


def risk_table(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per-vertebra ratio for one task, cranial to caudal: columns ``structure, label, ratio, band, <band> ...``.

    ``frame`` is ``risk.csv`` of ``spinekit biomech``; each band column holds the ratio where the vertebra is in
    that band and NaN elsewhere, so each band can be drawn as its own coloured bar series.
    """
    _check_columns(frame)
    rows = frame[frame["task"].astype(str) == task]
    if rows.empty:
        raise InputError(f"no risk rows for task {task!r} (tasks: {risk_tasks(frame)}); run 'spinekit biomech' with it")
    order = {value: index for index, value in enumerate(spine_labels.CRANIOCAUDAL_ORDER)}
    rows = rows.assign(_order=rows["label"].map(lambda v: order.get(int(v), 999))).sort_values("_order")
    out = pd.DataFrame(
        {"structure": rows["vertebra"].astype(str).to_numpy(), "label": rows["label"].astype(int).to_numpy()}
    )
    ratio = rows["factor_of_risk"].astype(float).to_numpy()
    out["ratio"] = ratio
    out["band"] = [risk_band(r) for r in ratio]
    for band, _ in RISK_BANDS:
        out[band] = np.where(out["band"].to_numpy() == band, ratio, np.nan)
    return out


def risk_bar_chart(frame: pd.DataFrame, scene: slicer.vtkMRMLScene, task: str) -> slicer.vtkMRMLPlotChartNode:
    """A chart node with one bar per vertebra (green/amber/red series by risk band) for ``task`` (risk.csv rows)."""
    data = risk_table(frame, task)
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
    for band, _ in RISK_BANDS:
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
    for band, color in RISK_BANDS:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"risk {task} {band}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("index")
        series.SetYColumnName(band)
        series.SetLabelColumnName("structure")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart
