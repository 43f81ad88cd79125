"""Stage outputs as MRML nodes, with files written by the real stages on a small phantom (slicer-core scene).

measure -> metrics table + centroid markups; biomech -> risk colours, table, bar chart; register -> per-level
transform nodes that map a follow-up point onto its baseline point as the phantom's truth says.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

slicer = pytest.importorskip("slicer", reason="the MRML layer needs the slicer-core wheel (pip install slicer-core)")

from spinekit.mrml import labels_to_segmentation_node, markups_to_points_lps, new_scene  # noqa: E402
from spinekit.mrml.colors import NO_VALUE_COLOR, RISK_BANDS, risk_band, risk_color  # noqa: E402
from spinekit.mrml.geometry import lps_to_ras, ras_to_lps  # noqa: E402
from spinekit.mrml.longitudinal import load_registration_outputs, transform_files  # noqa: E402
from spinekit.mrml.plots import risk_bar_chart, risk_table, risk_tasks  # noqa: E402
from spinekit.mrml.results import (  # noqa: E402
    centroids_from_metrics,
    color_segments_by_risk,
    load_measure_outputs,
    read_risk,
    restore_label_colors,
)
from spinekit.phantom import FollowupConfig, PhantomConfig, make_followup, make_phantom  # noqa: E402

TASKS = ["standing", "lift20_close"]


@pytest.fixture(scope="module")
def phantom_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    baseline = make_phantom(PhantomConfig(levels="L2-L4", spacing=(2.0, 2.0, 2.0), field_of_view="spine"))
    followup = make_followup(baseline, FollowupConfig(max_rotation_deg=8.0, max_translation_mm=10.0))
    baseline.write(root / "baseline")
    followup.write(root / "followup")
    return root, baseline, followup


@pytest.fixture(scope="module")
def measure_dir(phantom_dirs):
    from spinekit.morphometry.cli import measure_files

    root, _, _ = phantom_dirs
    base = root / "baseline"
    out = root / "measure"
    measure_files(base / "spine.nii.gz", out, base / "image.nii.gz", base / "muscles.nii.gz", figure=False)
    return out


@pytest.fixture(scope="module")
def biomech_dir(phantom_dirs):
    import torch

    from spinekit.biomech.cli import biomech_files

    torch.set_num_threads(1)
    root, _, _ = phantom_dirs
    base = root / "baseline"
    out = root / "biomech"
    biomech_files(base / "spine.nii.gz", out, "female", 60.0, 165.0, 65.0, base / "muscles.nii.gz",
                  base / "image.nii.gz", tasks=TASKS)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def register_dir(phantom_dirs):
    from spinekit.register.cli import run_register

    root, _, _ = phantom_dirs
    out = root / "register"
    base, follow = root / "baseline", root / "followup"
    run_register(base / "image.nii.gz", base / "spine.nii.gz", follow / "image.nii.gz", out,
                 followup_spine=follow / "spine.nii.gz")  # fmt: skip
    return out


def test_measure_outputs_give_table_and_true_centroids(measure_dir, phantom_dirs):
    _, baseline, _ = phantom_dirs
    scene = new_scene()
    table, markups = load_measure_outputs(measure_dir, scene, "phantom")
    frame = pd.read_csv(measure_dir / "metrics.csv")
    assert table.GetTable().GetNumberOfRows() == len(frame)
    points = dict(markups_to_points_lps(markups))
    assert list(points) == ["L2", "L3", "L4"]  # vertebrae only, cranial first
    for level, xyz in points.items():
        truth = np.asarray(baseline.truth["vertebrae"][level]["centroid_lps"])
        assert np.linalg.norm(xyz - truth) < 1.0, level  # 2 mm voxels: centroid of the sampled label
        position = [0.0, 0.0, 0.0]
        markups.GetNthControlPointPosition(list(points).index(level), position)
        np.testing.assert_allclose(position, lps_to_ras(xyz), atol=1e-9)  # held in RAS
    bodies = centroids_from_metrics(frame, "body_centroid")
    truth_body = np.asarray(baseline.truth["vertebrae"]["L3"]["body_centroid_lps"])
    assert np.linalg.norm(bodies["L3"] - truth_body) < 1.0
    discs = centroids_from_metrics(frame, vertebrae_only=False)
    assert list(discs) == ["L2", "L2/L3", "L3", "L3/L4", "L4"]


def test_risk_csv_colours_table_and_chart(biomech_dir, phantom_dirs):
    _, baseline, _ = phantom_dirs
    risk = read_risk(biomech_dir)
    assert risk_tasks(risk) == TASKS
    scene = new_scene()
    node = labels_to_segmentation_node(baseline.spine, scene, "spine", "spine")
    # Make one ratio high and one NaN so every band shows (the phantom's ratios are all low).
    risk.loc[(risk["task"] == "lift20_close") & (risk["vertebra"] == "L4"), "factor_of_risk"] = 1.5
    risk.loc[(risk["task"] == "lift20_close") & (risk["vertebra"] == "L2"), "factor_of_risk"] = math.nan
    bands = color_segments_by_risk(node, risk, "lift20_close")
    assert bands == {"L2": "unknown", "L3": "low", "L4": "high"}
    segmentation = node.GetSegmentation()
    assert segmentation.GetSegment("L4").GetColor() == pytest.approx(dict(RISK_BANDS)["high"])
    assert segmentation.GetSegment("L3").GetColor() == pytest.approx(dict(RISK_BANDS)["low"])
    assert segmentation.GetSegment("L2").GetColor() == pytest.approx(NO_VALUE_COLOR)
    disc_before = segmentation.GetSegment("disc_L3_L4").GetColor()
    assert disc_before == pytest.approx(np.array(spine_label_color(122)) / 255.0)  # discs keep their colour
    # The band names are biomech's own classes: the table's "class" column agrees wherever the ratio is real.
    original = read_risk(biomech_dir)
    classes = original["class"].fillna("").replace("", "unknown")
    assert [risk_band(r) for r in original["factor_of_risk"]] == list(classes)
    chart = risk_bar_chart(risk, scene, "lift20_close")
    table = chart.GetNthPlotSeriesNode(0).GetTableNode().GetTable()
    names = [table.GetColumnByName("structure").GetValue(i) for i in range(table.GetNumberOfRows())]
    assert names == list(risk_table(risk, "lift20_close")["structure"])
    assert names.index("L4") > names.index("L3")
    assert table.GetColumnByName("high").GetValue(names.index("L4")) == pytest.approx(1.5)
    restore_label_colors(node)
    assert segmentation.GetSegment("L4").GetColor() == pytest.approx(np.array(spine_label_color(23)) / 255.0)


def spine_label_color(value: int) -> tuple[int, int, int]:
    from spinekit import labels as spine_labels

    return spine_labels.spine_label_info(value).color


def test_risk_band_edges_match_biomech_classes():
    assert risk_band(0.79) == "low" and risk_band(0.8) == "transition" and risk_band(1.2) == "transition"
    assert risk_band(1.21) == "high" and risk_band(float("nan")) == "unknown"
    assert risk_color(1.0) == pytest.approx((1.0, 0.7, 0.0))


def test_register_transforms_map_followup_points_onto_baseline(register_dir, phantom_dirs):
    _, baseline, followup = phantom_dirs
    files = transform_files(register_dir)
    assert list(files) == ["L2", "L3", "L4"]
    scene = new_scene()
    nodes = load_registration_outputs(register_dir, scene, "follow-up registration")
    assert list(nodes.transforms) == ["L2", "L3", "L4"]
    assert nodes.table is not None and nodes.table.GetTable().GetNumberOfRows() > 10
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in [*nodes.transforms.values(), nodes.table]:
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == nodes.folder_item
    motions = followup.truth["followup"]["motions"]
    motions_mm = []
    for level, node in nodes.transforms.items():
        matrix = np.asarray(motions[level]["matrix"])  # baseline LPS -> follow-up LPS (truth)
        centre = np.asarray(baseline.truth["vertebrae"][level]["body_centroid_lps"])
        for offset in (np.zeros(3), np.array([12.0, -10.0, 8.0])):
            point_baseline = centre + offset
            point_followup = (matrix @ np.append(point_baseline, 1.0))[:3]
            # A follow-up point placed under the node (to parent) lands on the baseline point.
            ras = tuple(lps_to_ras(point_followup))
            moved = ras_to_lps(np.array(node.GetTransformToParent().TransformPoint(ras)))
            assert np.linalg.norm(moved - point_baseline) < 1.0, (level, moved, point_baseline)
            # The other direction moves the point away by about twice the motion: the check can fail.
            motion = float(np.linalg.norm(point_followup - point_baseline))
            wrong = ras_to_lps(np.array(node.GetTransformFromParent().TransformPoint(ras)))
            assert np.linalg.norm(wrong - point_baseline) > 1.5 * motion
            motions_mm.append(motion)
    assert max(motions_mm) > 3.0  # the phantom moved: identity would fail
