"""SpineBiomech: morphometrics, a subject-specific OpenSim model, vertebral loads, strength and fracture risk.

Template order: Module, parameter node, Widget (Qt only), Logic (delegates to ``spinekit measure`` and
``spinekit biomech``, both out of process), Test. The risk overlay recolours vertebra segments by the
load-to-strength ratio (green < 0.8, amber 0.8-1.2, red > 1.2) and plots it per level.
"""

import tempfile
from pathlib import Path
from typing import Annotated

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# SpineBiomech
#


class SpineBiomech(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Spine Biomech")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "SpineBiomech")]
        self.parent.dependencies = ["Segmentations", "Tables", "Plots"]
        self.parent.contributors = ["SpineBiomech developers"]
        self.parent.helpText = _(
            "Measure vertebral and disc morphometry, build a subject-specific OpenSim spine model, compute "
            "vertebral loads for daily tasks and CT-based vertebral strength, and show the load-to-strength ratio."
        )
        self.parent.acknowledgementText = _(
            "Built on OpenSim (Delp et al. 2007; Seth et al. 2018) and 3D Slicer. Factor of risk after Hayes 1991."
        )


#
# SpineBiomechParameterNode
#


@parameterNodeWrapper
class SpineBiomechParameterNode:
    spineSegmentation: vtkMRMLSegmentationNode
    muscleSegmentation: vtkMRMLSegmentationNode
    ctVolume: vtkMRMLScalarVolumeNode
    sex: Annotated[str, Choice(["female", "male"])] = "female"
    ageYears: Annotated[int, WithinRange(18, 110)] = 60
    heightCm: Annotated[float, WithinRange(120.0, 220.0)] = 170.0
    weightKg: Annotated[float, WithinRange(30.0, 250.0)] = 70.0
    task: Annotated[str, Choice(["all", "standing", "flexion", "lifting"])] = "all"
    baseModel: str = ""


#
# SpineBiomechWidget
#


class SpineBiomechWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineBiomech.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineBiomechLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasureButton)
        self.ui.modelButton.connect("clicked(bool)", self.onModelButton)
        self.ui.cancelButton.connect("clicked(bool)", self.logic.cancel)
        self.ui.riskTaskComboBox.connect("currentTextChanged(QString)", self.onRiskTaskChanged)
        self.ui.chartButton.connect("clicked(bool)", self.onChartButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.spineSegmentation)
        self.ui.measureButton.enabled = ready and not self.logic.running
        self.ui.modelButton.enabled = ready and self.logic.metricsPath is not None and not self.logic.running
        self.ui.chartButton.enabled = self.logic.riskFrame is not None

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.progressBar.setFormat(f"{message} %p%" if message else "%p%")
        slicer.app.processEvents()

    def onMeasureButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Measurement failed."), waitCursor=True):
            if not self.logic.ensureDependencies(["core"]):
                return
            table, _markups = self.logic.measure(p.spineSegmentation, p.muscleSegmentation, p.ctVolume)
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
            self._checkCanApply()

    def onModelButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Model building or solving failed."), waitCursor=True):
            if not self.logic.ensureDependencies(["core", "biomech"]):
                return
            self.ui.progressBar.visible, self.ui.cancelButton.enabled = True, True
            try:
                subject = {"sex": p.sex, "age": p.ageYears, "height-cm": p.heightCm, "weight-kg": p.weightKg}
                tasks = self.logic.buildAndRunModel(p.ctVolume, subject, p.task, p.baseModel, self._onProgress)
            finally:
                self.ui.progressBar.visible, self.ui.cancelButton.enabled = False, False
            self.ui.riskTaskComboBox.clear()
            self.ui.riskTaskComboBox.addItems(tasks)
            self._checkCanApply()

    def onRiskTaskChanged(self, task: str) -> None:
        if not task or self.logic.riskFrame is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not colour the vertebrae."), waitCursor=True):
            self.ui.legendLabel.text = self.logic.showRisk(self._parameterNode.spineSegmentation, task)

    def onChartButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not show the chart."), waitCursor=True):
            chart = self.logic.riskChart(self.ui.riskTaskComboBox.currentText)
            slicer.modules.plots.logic().ShowChartInLayout(chart)


#
# SpineBiomechLogic
#


class SpineBiomechLogic(ScriptedLoadableModuleLogic):
    """Thin logic around ``spinekit measure`` and ``spinekit biomech``; the process runner is injected."""

    RISK_METRIC = "risk_ratio"

    def __init__(self, runner=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = runner
        self.running = False
        self._cancelRequested = False
        self.workdir = None
        self.metricsPath = None
        self.riskFrame = None

    def getParameterNode(self):
        return SpineBiomechParameterNode(super().getParameterNode())

    def ensureDependencies(self, features) -> bool:
        from spinekit.mrml.dependencies import ensure_dependencies

        pipInstall = getattr(getattr(slicer, "packaging", None), "pip_ensure", None) or slicer.util.pip_install
        return ensure_dependencies(features, slicer.util.confirmOkCancelDisplay, pipInstall)

    def cancel(self) -> None:
        self._cancelRequested = True

    def _shouldCancel(self) -> bool:
        slicer.app.processEvents()
        return self._cancelRequested

    def _run(self, subcommand, arguments, progress=None):
        from spinekit.mrml.process import run_spinekit, spinekit_command

        self.running, self._cancelRequested = True, False
        try:
            return run_spinekit(spinekit_command(subcommand, arguments), self.runner, progress, self._shouldCancel)
        finally:
            self.running = False

    def measure(self, spineSegmentation, muscleSegmentation=None, ctVolume=None, progress=None, workdir=None):
        """Run ``spinekit measure``; returns (metrics table node, vertebral centroid markups node)."""
        import pandas as pd

        from spinekit.io import write_labels, write_volume
        from spinekit.mrml import (
            centroids_to_markups,
            metrics_to_table_node,
            node_to_volume,
            segmentation_node_to_labels,
        )

        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="SpineBiomech-"))
        reference = node_to_volume(ctVolume) if ctVolume else self._segmentationGrid(spineSegmentation)
        spine = segmentation_node_to_labels(spineSegmentation, reference, "spine")
        arguments = ["--labels", write_labels(spine, self.workdir / "spine.nii.gz")]
        if ctVolume:
            arguments += ["--image", write_volume(reference, self.workdir / "ct.nii.gz")]
        if muscleSegmentation:
            muscles = segmentation_node_to_labels(muscleSegmentation, reference, "muscles")
            arguments += ["--muscles", write_labels(muscles, self.workdir / "muscles.nii.gz")]
        arguments += ["--output-dir", self.workdir / "measure"]
        self._run("measure", arguments, progress)
        self.metricsPath = self.workdir / "measure" / "metrics.csv"
        frame = pd.read_csv(self.metricsPath, dtype={"reason": str}).fillna({"reason": ""})
        table = metrics_to_table_node(frame, slicer.mrmlScene, "spine metrics")
        centroids = {}
        for axis in "xyz":
            for row in frame[frame["metric"] == f"centroid_{axis}_lps"].itertuples():
                centroids.setdefault(row.structure, [0.0, 0.0, 0.0])["xyz".index(axis)] = row.value
        markups = centroids_to_markups(centroids, slicer.mrmlScene, "vertebra centroids")
        return table, markups

    def _segmentationGrid(self, segmentationNode):
        """The segmentation's reference grid as an empty Volume (used when no CT is given)."""
        import numpy as np

        from spinekit.io import Volume
        from spinekit.mrml.volumes import node_to_volume

        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            slicer.modules.segmentations.logic().ExportAllSegmentsToLabelmapNode(segmentationNode, labelmap)
            grid = node_to_volume(labelmap)
        finally:
            slicer.mrmlScene.RemoveNode(labelmap)
        return Volume(np.zeros(grid.array.shape, np.int16), grid.spacing, grid.origin, grid.direction)

    def buildAndRunModel(self, ctVolume, subject, task="all", baseModel="", progress=None):
        """Run ``spinekit biomech`` on the last measurement; returns the task names with risk results."""
        import pandas as pd

        from spinekit.mrml import metrics_to_table_node

        if self.metricsPath is None:
            raise ValueError(_("Measure first: the model is built from the measured morphometry"))
        arguments = ["--labels", self.workdir / "spine.nii.gz", "--metrics", self.metricsPath]
        if ctVolume:
            arguments += ["--image", self.workdir / "ct.nii.gz"]
        for key, value in subject.items():
            arguments += [f"--{key}", value]
        arguments += ["--tasks", task] + (["--base-model", baseModel] if baseModel else [])
        arguments += ["--output-dir", self.workdir / "biomech"]
        self._run("biomech", arguments, progress)
        self.riskFrame = pd.read_csv(self.workdir / "biomech" / "risk.csv", dtype={"reason": str}).fillna(
            {"reason": ""}
        )
        metrics_to_table_node(self.riskFrame, slicer.mrmlScene, "loads, strength and risk")
        rows = self.riskFrame[self.riskFrame["metric"] == self.RISK_METRIC]
        return sorted(rows["task"].astype(str).unique()) if "task" in rows.columns else [task]

    def showRisk(self, segmentationNode, task: str) -> str:
        """Recolour vertebra segments by their ratio for ``task``; returns the legend text."""
        from spinekit.mrml import risk_color, segment_id_for_label, set_segment_colors
        from spinekit.mrml.colors import risk_legend
        from spinekit.mrml.plots import risk_table

        data = risk_table(self.riskFrame, task, self.RISK_METRIC)
        present = {segmentationNode.GetSegmentation().GetNthSegmentID(i)
                   for i in range(segmentationNode.GetSegmentation().GetNumberOfSegments())}  # fmt: skip
        colors = {segment_id_for_label(int(r.label)): risk_color(r.ratio) for r in data.itertuples()}
        set_segment_colors(segmentationNode, {k: v for k, v in colors.items() if k in present})
        return risk_legend()

    def riskChart(self, task: str):
        from spinekit.mrml import risk_bar_chart

        return risk_bar_chart(self.riskFrame, slicer.mrmlScene, task, self.RISK_METRIC)


#
# SpineBiomechTest
#


class FakeBiomechRunner:
    """Stands in for ``spinekit measure`` and ``spinekit biomech``: fixed small tables."""

    def __init__(self) -> None:
        self.commands = []

    def run(self, command, on_line, should_cancel) -> int:
        self.commands.append(list(command))
        out = Path(command[command.index("--output-dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        header = "subject,structure,label,metric,value,unit,method,reason"
        if command[3] == "measure":
            rows = [f"s,L4,23,centroid_{a}_lps,{v},mm,mean," for a, v in zip("xyz", (1.0, 2.0, 3.0), strict=True)]
            (out / "metrics.csv").write_text("\n".join([header, *rows, "s,L4,23,anterior_height,27.5,mm,plane,"]))
        else:
            rows = ["s,L3,22,risk_ratio,0.5,1,so,,lifting", "s,L4,23,risk_ratio,1.5,1,so,,lifting"]
            (out / "risk.csv").write_text("\n".join([header + ",task", *rows]))
        return 0


class SpineBiomechTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MeasureModelAndRiskWithFakeRunner()

    def test_MeasureModelAndRiskWithFakeRunner(self):
        from spinekit.mrml import labels_to_segmentation_node, markups_to_points_lps, volume_to_node
        from spinekit.mrml.testing import small_spine

        image, labels = small_spine()
        ct = volume_to_node(image, slicer.mrmlScene, "ct")
        segmentation = labels_to_segmentation_node(labels, slicer.mrmlScene, "spine", "spine")
        logic = SpineBiomechLogic(FakeBiomechRunner())
        table, markups = logic.measure(segmentation, None, ct)
        self.assertEqual(table.GetTable().GetNumberOfRows(), 4)
        label, xyz = markups_to_points_lps(markups)[0]
        self.assertEqual((label, list(xyz)), ("L4", [1.0, 2.0, 3.0]))
        tasks = logic.buildAndRunModel(ct, {"sex": "female", "age": 60}, "lifting")
        self.assertEqual(tasks, ["lifting"])
        logic.showRisk(segmentation, "lifting")
        self.assertAlmostEqual(segmentation.GetSegmentation().GetSegment("L4").GetColor()[0], 0.85)
        self.assertEqual(logic.riskChart("lifting").GetNumberOfPlotSeriesNodes(), 3)
        self.delayDisplay("SpineBiomech logic test passed")
