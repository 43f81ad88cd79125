"""MRML layer on a real scene (slicer-core wheel): volumes, segmentations, tables, markups, transforms, plots."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="the MRML layer needs the slicer-core wheel (pip install slicer-core)")
vtk = pytest.importorskip("vtk")

from spinekit import labels as spine_labels  # noqa: E402
from spinekit.errors import InputError, LabelError  # noqa: E402
from spinekit.io import Volume  # noqa: E402
from spinekit.mrml import (  # noqa: E402
    centroids_to_markups,
    labels_to_labelmap_node,
    labels_to_segmentation_node,
    markups_to_points_lps,
    matrix_lps_to_transform_node,
    metrics_to_table_node,
    new_scene,
    node_to_volume,
    put_in_folder,
    risk_bar_chart,
    risk_color,
    segment_id_for_label,
    segmentation_node_to_labels,
    set_segment_colors,
    sitk_transform_file_to_node,
    table_node_to_frame,
    update_segment_from_mask,
    volume_to_node,
)
from spinekit.mrml.segmentations import segment_mask  # noqa: E402
from spinekit.mrml.terminology import parse_terminology_entry  # noqa: E402
from spinekit.mrml.transforms import transform_node_to_matrix_lps  # noqa: E402


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


OBLIQUE = _rotation([1.0, 2.0, 0.5], 0.4)


@pytest.fixture()
def scene():
    return new_scene()


@pytest.fixture(scope="module")
def spine_labels_volume() -> Volume:
    """L3, L4, L5 with discs L3/L4 and L4/L5 and the canal, on an oblique anisotropic grid."""
    array = np.zeros((20, 12, 10), dtype=np.int16)
    array[1:5, 2:9, 2:8] = 22  # L3
    array[5:7, 2:9, 2:8] = 122  # disc L3/L4
    array[7:11, 2:9, 2:8] = 23  # L4
    array[11:13, 2:9, 2:8] = 123  # disc L4/L5
    array[13:18, 2:9, 2:8] = 24  # L5
    array[1:18, 9:11, 4:6] = spine_labels.CANAL
    return Volume(array, (0.8, 0.9, 1.25), (12.5, -40.25, 103.0), OBLIQUE)


def test_volume_round_trip_is_exact_with_oblique_direction(scene):
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(size=(7, 6, 5)).astype(np.float32), (0.7, 1.1, 2.5), (-33.3, 12.0, 250.5), OBLIQUE)
    node = volume_to_node(volume, scene, "ct")
    back = node_to_volume(node)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.spacing == volume.spacing
    np.testing.assert_allclose(back.origin, volume.origin, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.direction, volume.direction, rtol=0, atol=1e-12)


def test_volume_node_geometry_is_ras(scene):
    """Voxel (1, 2, 3) lands at the RAS point that is the LPS point with x and y negated."""
    volume = Volume(np.zeros((4, 5, 6), np.int16), (0.5, 2.0, 3.0), (10.0, 20.0, 30.0), OBLIQUE)
    node = volume_to_node(volume, scene, "ct")
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ras = ijk_to_ras.MultiplyPoint((1, 2, 3, 1))[:3]
    lps = volume.index_to_lps(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-9)


def test_labelmap_node_has_named_colour_table(scene, spine_labels_volume):
    node = labels_to_labelmap_node(spine_labels_volume, scene, "spine", "labels")
    colors = node.GetDisplayNode().GetColorNode()
    assert colors.GetColorName(24) == "L5"
    assert colors.GetColorName(123) == "disc L4/L5"
    rgba = [0.0] * 4
    colors.GetColor(24, rgba)
    np.testing.assert_allclose(rgba[:3], np.array(spine_labels.spine_label_info(24).color) / 255.0)
    np.testing.assert_array_equal(node_to_volume(node).array, spine_labels_volume.array)
    with pytest.raises(LabelError, match="not spine labels"):
        labels_to_labelmap_node(spine_labels_volume.with_array(np.full((20, 12, 10), 77, np.int16)), scene)


def test_segmentation_node_segments_names_colours_terminology(scene, spine_labels_volume):
    node = labels_to_segmentation_node(spine_labels_volume, scene, "spine", "spine")
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert ids == ["L3", "disc_L3_L4", "L4", "disc_L4_L5", "L5", "spinal_canal"]
    l5 = segmentation.GetSegment("L5")
    assert l5.GetName() == "L5"
    np.testing.assert_allclose(l5.GetColor(), np.array(spine_labels.spine_label_info(24).color) / 255.0)
    assert "~SCT^49668003^L5 vertebra~" in l5.GetTerminology()
    assert parse_terminology_entry(segmentation.GetSegment("disc_L4_L5").GetTerminology())[:2] == ("SCT", "243923001")
    assert segment_id_for_label(123) == "disc_L4_L5"


def test_segmentation_round_trip_gives_identical_labels(scene, spine_labels_volume):
    node = labels_to_segmentation_node(spine_labels_volume, scene)
    back = segmentation_node_to_labels(node, spine_labels_volume)
    np.testing.assert_array_equal(back.array, spine_labels_volume.array)
    assert back.same_grid(spine_labels_volume)


def test_segmentation_to_labels_by_name_and_by_terminology(scene, spine_labels_volume):
    """Segments without our tags (e.g. drawn by hand in Slicer) map back through name, then code."""
    node = labels_to_segmentation_node(spine_labels_volume, scene)
    segmentation = node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segmentation.GetNthSegment(i).RemoveTag("SpineBiomech.Label")
    segmentation.GetSegment("L4").SetName("Segment_7")  # unknown name: the terminology code decides
    back = segmentation_node_to_labels(node, spine_labels_volume)
    np.testing.assert_array_equal(back.array, spine_labels_volume.array)
    segmentation.GetSegment("L4").SetTerminology("")
    with pytest.raises(LabelError, match="Segment_7"):
        segmentation_node_to_labels(node, spine_labels_volume)


def test_segmentation_resampled_onto_other_reference(scene, spine_labels_volume):
    """Exporting onto a grid with half the spacing doubles every extent: voxel counts x 8."""
    node = labels_to_segmentation_node(spine_labels_volume, scene)
    v = spine_labels_volume
    corner = np.asarray(v.origin) - v.direction @ (0.5 * np.asarray(v.spacing))
    fine_spacing = np.asarray(v.spacing) / 2
    fine = Volume(
        np.zeros(tuple(2 * n for n in v.array.shape), np.int16),
        tuple(fine_spacing),
        tuple(corner + v.direction @ (0.5 * fine_spacing)),
        v.direction,
    )
    back = segmentation_node_to_labels(node, fine)
    for value in (22, 24, 123, spine_labels.CANAL):
        assert np.count_nonzero(back.array == value) == 8 * np.count_nonzero(v.array == value)


def test_muscle_segments_carry_laterality(scene):
    array = np.zeros((4, 6, 8), np.int16)
    array[:, :, :4] = spine_labels.muscle_label("psoas", "left")
    array[:, :, 4:] = spine_labels.muscle_label("psoas", "right")
    muscles = Volume(array, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    node = labels_to_segmentation_node(muscles, scene, "muscles", "muscles")
    entry = node.GetSegmentation().GetSegment("psoas_left").GetTerminology()
    assert parse_terminology_entry(entry) == ("SCT", "71915005", "7771000")
    np.testing.assert_array_equal(segmentation_node_to_labels(node, muscles, "muscles").array, array)


def test_update_segment_from_mask_changes_only_that_segment(scene, spine_labels_volume):
    node = labels_to_segmentation_node(spine_labels_volume, scene)
    v = spine_labels_volume
    before = {sid: segment_mask(node, sid, v) for sid in ("L3", "disc_L3_L4", "disc_L4_L5", "L5", "spinal_canal")}
    new_l4 = np.zeros(v.array.shape, np.uint8)
    new_l4[6:12, 1:10, 1:9] = 1  # grows into both discs and the canal
    update_segment_from_mask(node, "L4", v.with_array(new_l4))
    np.testing.assert_array_equal(segment_mask(node, "L4", v), new_l4.astype(bool))
    for sid, mask in before.items():
        np.testing.assert_array_equal(segment_mask(node, sid, v), mask, err_msg=sid)
    with pytest.raises(LabelError, match="no segment 'L9'"):
        update_segment_from_mask(node, "L9", v.with_array(new_l4))


def test_set_segment_colors_and_risk_color(scene, spine_labels_volume):
    node = labels_to_segmentation_node(spine_labels_volume, scene)
    set_segment_colors(node, {"L4": risk_color(1.5), "L5": (0, 255, 0)})
    seg = node.GetSegmentation()
    assert seg.GetSegment("L4").GetColor() == pytest.approx((0.85, 0.10, 0.10))
    assert seg.GetSegment("L5").GetColor() == pytest.approx((0.0, 1.0, 0.0))
    assert seg.GetSegment("L3").GetColor() == pytest.approx(np.array(spine_labels.spine_label_info(22).color) / 255)
    assert risk_color(0.79) == pytest.approx((0.20, 0.70, 0.25))
    assert risk_color(0.8) == risk_color(1.2) == pytest.approx((1.0, 0.70, 0.0))  # band edges as biomech classify
    assert risk_color(1.21) == pytest.approx((0.85, 0.10, 0.10))
    assert risk_color(float("nan")) == pytest.approx((0.6, 0.6, 0.6))
    with pytest.raises(LabelError):
        set_segment_colors(node, {"T1": (1, 0, 0)})


def test_table_node_one_row_per_metric(scene):
    frame = pd.DataFrame(
        {
            "subject": ["s1", "s1", "s1"],
            "structure": ["L4", "L4", "disc L4/L5"],
            "label": [23, 23, 123],
            "metric": ["anterior_height", "posterior_height", "disc_height"],
            "value": [27.5, 25.25, math.nan],
            "unit": ["mm", "mm", "mm"],
            "method": ["centroid plane", "centroid plane", "mid-sagittal"],
            "reason": ["", "", "disc not segmented"],
        }
    )
    node = metrics_to_table_node(frame, scene, "metrics")
    table = node.GetTable()
    assert table.GetNumberOfRows() == 3
    assert isinstance(table.GetColumnByName("value"), vtk.vtkDoubleArray)
    assert isinstance(table.GetColumnByName("label"), vtk.vtkIntArray)
    assert isinstance(table.GetColumnByName("metric"), vtk.vtkStringArray)
    assert table.GetColumnByName("value").GetValue(1) == 25.25
    back = table_node_to_frame(node)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_markups_round_trip_lps_ras_lps(scene):
    centroids = {"L4": np.array([10.0, -20.5, 300.25]), "L5": np.array([-3.0, 4.0, 270.0])}
    node = centroids_to_markups(centroids, scene, "centroids")
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(0, position)
    assert position == pytest.approx([-10.0, 20.5, 300.25])  # stored in RAS
    assert node.GetStorageNode().GetCoordinateSystem() == slicer.vtkMRMLStorageNode.CoordinateSystemLPS
    points = markups_to_points_lps(node)
    assert [label for label, _ in points] == ["L4", "L5"]
    for (_, xyz), expected in zip(points, centroids.values(), strict=True):
        np.testing.assert_allclose(xyz, expected, atol=1e-12)
    with pytest.raises(InputError):
        centroids_to_markups({"L1": [np.nan, 0, 0]}, scene)


def test_transform_node_moves_ras_point_as_lps_matrix_says(scene):
    """A rotation of 90 degrees about LPS z plus a shift (1, 2, 3) mm, applied to LPS point (10, 0, 5)."""
    matrix_lps = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0, 0, 0, 1]])
    node = matrix_lps_to_transform_node(matrix_lps, scene, "L4 motion")
    # LPS (10, 0, 5) -> (0*10 - 0 + 1, 10 + 2, 5 + 3) = (1, 12, 8) LPS = (-1, -12, 8) RAS.
    moved_ras = node.GetTransformToParent().TransformPoint((-10.0, 0.0, 5.0))
    assert moved_ras == pytest.approx((-1.0, -12.0, 8.0), abs=1e-12)
    np.testing.assert_allclose(transform_node_to_matrix_lps(node), matrix_lps, atol=1e-12)


@pytest.mark.parametrize("suffix", [".tfm", ".h5"])
def test_itk_transform_file_becomes_resampling_transform(scene, tmp_path, suffix):
    """ITK maps fixed -> moving in LPS; Slicer's node must hold that as 'from parent' (F M F)."""
    itk = sitk.Euler3DTransform((5.0, -2.0, 40.0), 0.1, -0.2, 0.3, (1.5, -2.5, 4.0))
    path = tmp_path / f"L4{suffix}"
    sitk.WriteTransform(itk, str(path))
    node = sitk_transform_file_to_node(path, scene)
    assert node.IsA("vtkMRMLLinearTransformNode")
    fixed_lps = np.array([12.0, -7.0, 55.0])
    moving_lps = np.array(itk.TransformPoint(tuple(fixed_lps)))
    moving_ras = node.GetTransformFromParent().TransformPoint(tuple(fixed_lps * [-1, -1, 1]))
    np.testing.assert_allclose(moving_ras, moving_lps * [-1, -1, 1], atol=1e-9)
    # ... so a follow-up (moving) image placed under the node comes back onto baseline (fixed).
    back_ras = node.GetTransformToParent().TransformPoint(tuple(moving_lps * [-1, -1, 1]))
    np.testing.assert_allclose(back_ras, fixed_lps * [-1, -1, 1], atol=1e-9)


def test_put_in_folder(scene, spine_labels_volume):
    node = labels_to_segmentation_node(spine_labels_volume, scene)
    transform = matrix_lps_to_transform_node(np.eye(4), scene, "L4")
    folder = put_in_folder(scene, [node, transform], "Follow-up")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert folder
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(transform)) == folder
    assert put_in_folder(scene, [], "Follow-up") == folder  # reused, not duplicated


def test_risk_bar_chart_bands(scene):
    """risk.csv layout of spinekit biomech: one row per vertebra x task with factor_of_risk and class."""
    frame = pd.DataFrame(
        {
            "subject": "s1",
            "vertebra": ["L5", "L3", "L4", "L1", "L4"],
            "label": [24, 22, 23, 20, 23],
            "task": ["lift", "lift", "lift", "lift", "stand"],
            "load_N": [3000.0, 1000.0, 2000.0, 500.0, 600.0],
            "strength_N": [2000.0, 2000.0, 2000.0, math.nan, 2000.0],
            "factor_of_risk": [1.5, 0.5, 1.0, math.nan, 0.3],
            "class": ["high", "low", "transition", "", "low"],
        }
    )
    chart = risk_bar_chart(frame, scene, "lift")
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    table = chart.GetNthPlotSeriesNode(0).GetTableNode().GetTable()
    names = [table.GetColumnByName("structure").GetValue(i) for i in range(table.GetNumberOfRows())]
    assert names == ["L1", "L3", "L4", "L5"]  # cranial to caudal, the other task left out
    assert [table.GetColumnByName("high").GetValue(i) for i in range(4)] == [0.0, 0.0, 0.0, 1.5]
    assert [table.GetColumnByName("transition").GetValue(i) for i in range(4)] == [0.0, 0.0, 1.0, 0.0]
    assert [table.GetColumnByName("low").GetValue(i) for i in range(4)] == [0.0, 0.5, 0.0, 0.0]
    assert chart.GetNthPlotSeriesNode(0).GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeBar
    with pytest.raises(InputError, match="walk"):
        risk_bar_chart(frame, scene, "walk")
    with pytest.raises(InputError, match="factor_of_risk"):
        risk_bar_chart(frame.drop(columns="factor_of_risk"), scene, "lift")
