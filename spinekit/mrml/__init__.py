"""MRML layer: spinekit results as Slicer nodes (volumes, segmentations, tables, markups, transforms, plots).

This package imports ``slicer`` (the application's Python or the ``slicer-core`` wheel) but never Qt, so it
runs headless and is tested on a real ``vtkMRMLScene``. ``commands`` (stage command lines, no ``slicer``),
``process`` (out-of-process runs), ``interactive`` (click corrections), ``results`` / ``longitudinal`` (stage
outputs as nodes) and ``resources`` (colour tables, terminology) serve the three Slicer modules.
It is the only place where coordinates change between spinekit's LPS millimetres (ITK/DICOM) and Slicer's
RAS: ``RAS = F @ LPS`` with ``F = diag(-1, -1, 1)`` (:mod:`spinekit.mrml.geometry`).
"""

from __future__ import annotations

from spinekit.mrml.colors import risk_color, set_segment_colors
from spinekit.mrml.folders import put_in_folder
from spinekit.mrml.interactive import SegmentEditorSession
from spinekit.mrml.longitudinal import load_registration_outputs
from spinekit.mrml.plots import risk_bar_chart
from spinekit.mrml.results import color_segments_by_risk, load_measure_outputs, read_risk
from spinekit.mrml.scene import new_scene
from spinekit.mrml.segmentations import (
    labels_to_segmentation_node,
    segment_id_for_label,
    segmentation_node_to_labels,
    update_segment_from_mask,
)
from spinekit.mrml.tables import centroids_to_markups, markups_to_points_lps, metrics_to_table_node, table_node_to_frame
from spinekit.mrml.transforms import matrix_lps_to_transform_node, sitk_transform_file_to_node
from spinekit.mrml.volumes import labels_to_labelmap_node, node_to_volume, volume_to_node

__all__ = [
    "SegmentEditorSession",
    "centroids_to_markups",
    "color_segments_by_risk",
    "labels_to_labelmap_node",
    "labels_to_segmentation_node",
    "load_measure_outputs",
    "load_registration_outputs",
    "markups_to_points_lps",
    "matrix_lps_to_transform_node",
    "metrics_to_table_node",
    "new_scene",
    "node_to_volume",
    "put_in_folder",
    "read_risk",
    "risk_bar_chart",
    "risk_color",
    "segment_id_for_label",
    "segmentation_node_to_labels",
    "set_segment_colors",
    "sitk_transform_file_to_node",
    "table_node_to_frame",
    "update_segment_from_mask",
    "volume_to_node",
]
