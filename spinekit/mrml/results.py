"""What ``spinekit measure`` and ``spinekit biomech`` write, as MRML nodes: metrics table, centroids, risk overlay.

``metrics.csv`` (spinekit.morphometry.measure) is tidy; vertebra and disc centroids are its rows
``centroid_{x,y,z}_lps`` (whole label) and, for vertebrae, ``body_centroid_{x,y,z}_lps`` (vertebral body only),
in LPS mm (spinekit.morphometry.body, discs). ``risk.csv`` (spinekit.biomech.pipeline) has one row per vertebra
and task with ``factor_of_risk`` and ``class``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import slicer

from spinekit import labels as spine_labels
from spinekit.errors import InputError, LabelError
from spinekit.mrml.colors import NO_VALUE_COLOR, risk_band, risk_color, set_segment_colors
from spinekit.mrml.commands import read_tidy_csv
from spinekit.mrml.plots import risk_table
from spinekit.mrml.segmentations import _anatomical_order, _label_of_segment
from spinekit.mrml.tables import centroids_to_markups, metrics_to_table_node

logger = logging.getLogger(__name__)

#: Centroid metric prefixes of metrics.csv: whole label, vertebral body only.
CENTROID_PREFIXES = ("centroid", "body_centroid")


def centroids_from_metrics(
    frame: pd.DataFrame, prefix: str = "centroid", vertebrae_only: bool = True
) -> dict[str, np.ndarray]:
    """{structure: LPS centroid (mm)} from the ``<prefix>_{x,y,z}_lps`` rows of a metrics table, cranial first.

    Structures with a NaN coordinate are left out (logged with the table's reason).
    """
    if prefix not in CENTROID_PREFIXES:
        raise InputError(f"centroid prefix must be one of {CENTROID_PREFIXES}, not {prefix!r}")
    names = [f"{prefix}_{axis}_lps" for axis in "xyz"]
    rows = frame[frame["metric"].isin(names)]
    # Muscle rows ("psoas_left L2", label 1) share label numbers with vertebrae: keep rows named as spine labels.
    keep = [_spine_structure(int(label), str(structure), vertebrae_only)
            for label, structure in zip(rows["label"], rows["structure"], strict=True)]  # fmt: skip
    rows = rows[keep]
    centroids: dict[str, np.ndarray] = {}
    groups = sorted(rows.groupby(["label", "structure"]), key=lambda item: _anatomical_order(int(item[0][0])))
    for (_, structure), group in groups:
        values = group.set_index("metric")["value"].reindex(names).astype(float).to_numpy()
        if not np.all(np.isfinite(values)):
            reasons = "; ".join(sorted({str(r) for r in group.get("reason", []) if str(r)}))
            logger.info("no %s for %s (%s)", prefix, structure, reasons or "not measured")
            continue
        centroids[str(structure)] = values
    return centroids


def _spine_structure(label: int, structure: str, vertebrae_only: bool) -> bool:
    """Whether a metrics row named ``structure`` with ``label`` is a vertebra (or, if allowed, a disc/canal)."""
    if spine_labels.is_vertebra(label):
        return structure in (spine_labels.VERTEBRA_NAMES[label], spine_labels.spine_label_info(label).name)
    if vertebrae_only:
        return False
    try:
        name = spine_labels.spine_label_info(label).name
    except LabelError:
        return False
    return structure in (name, name.removeprefix("disc "))


def load_measure_outputs(
    out_dir: str | Path, scene: slicer.vtkMRMLScene, name: str = "spine", prefix: str = "centroid"
) -> tuple[slicer.vtkMRMLTableNode, slicer.vtkMRMLMarkupsFiducialNode]:
    """``out_dir/metrics.csv`` as a table node and its vertebral centroids as a markups node (one point each)."""
    frame = read_tidy_csv(Path(out_dir) / "metrics.csv")
    table = metrics_to_table_node(frame, scene, f"{name} metrics")
    markups = centroids_to_markups(centroids_from_metrics(frame, prefix), scene, f"{name} vertebra centroids")
    return table, markups


def read_risk(out_dir: str | Path) -> pd.DataFrame:
    """``out_dir/risk.csv`` of ``spinekit biomech`` (empty ``reason`` as "")."""
    path = Path(out_dir) / "risk.csv"
    if not path.is_file():
        raise InputError(f"{path} was not written; see the output of 'spinekit biomech'")
    frame = pd.read_csv(path, dtype={"reason": str, "subject": str, "vertebra": str, "task": str})
    for column in ("reason", "subject", "strength_method"):
        if column in frame.columns:
            frame[column] = frame[column].fillna("")
    return frame


def vertebra_segments(node: slicer.vtkMRMLSegmentationNode) -> dict[int, str]:
    """{vertebra label: segment ID} of a spine segmentation (segments mapped by tag, name or code)."""
    segmentation = node.GetSegmentation()
    found = {}
    for index in range(segmentation.GetNumberOfSegments()):
        try:
            value = _label_of_segment(segmentation.GetNthSegment(index), "spine")
        except LabelError:
            continue
        if spine_labels.is_vertebra(value):
            found[value] = segmentation.GetNthSegmentID(index)
    return found


def color_segments_by_risk(node: slicer.vtkMRMLSegmentationNode, risk: pd.DataFrame, task: str) -> dict[str, str]:
    """Colour each vertebra segment by its factor of risk for ``task``; returns {segment ID: band}.

    Green / amber / red by :func:`spinekit.mrml.colors.risk_band`; vertebrae without a ratio (NaN, or not in
    ``risk``) turn grey so that "not computed" is visible. Discs, canal and cord keep their colours.
    """
    data = risk_table(risk, task)
    ratios = {int(row.label): float(row.ratio) for row in data.itertuples()}
    colors, bands = {}, {}
    for value, segment_id in vertebra_segments(node).items():
        ratio = ratios.get(value, math.nan)
        colors[segment_id] = risk_color(ratio) if math.isfinite(ratio) else NO_VALUE_COLOR
        bands[segment_id] = risk_band(ratio)
    set_segment_colors(node, colors)
    return bands


def restore_label_colors(node: slicer.vtkMRMLSegmentationNode, kind: str = "spine") -> None:
    """Give every mapped segment back its colour from :mod:`spinekit.labels` (undo a risk overlay)."""
    segmentation = node.GetSegmentation()
    colors = {}
    for index in range(segmentation.GetNumberOfSegments()):
        try:
            value = _label_of_segment(segmentation.GetNthSegment(index), kind)
        except LabelError:
            continue
        colors[segmentation.GetNthSegmentID(index)] = spine_labels.label_info(value, kind).color
    set_segment_colors(node, colors)
