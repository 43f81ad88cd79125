"""SpineBiomech: morphometrics, a subject-specific OpenSim model, vertebral loads, strength and fracture risk.

Template order: Module, parameter node, Widget (Qt only), Logic (delegates to ``spinekit measure`` and
``spinekit biomech``, both out of process), Test. The risk overlay recolours vertebra segments by the
load-to-strength ratio of one task (green / amber / red by ``spinekit.biomech.risk.classify``: below, within and
above the +/-20 % band around 1.0) and plots it per level.
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

#: Built-in tasks of ``spinekit biomech --tasks`` (spinekit.biomech.tasks.DEFAULT_TASKS; the .ui lists the same).
TASKS = ["standing", "flexed_standing", "flexion60_5kg", "lift20_close", "lift20_roundback", "lateral20_5kg"]

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
        slicer.app.connect("startupCompleted()", registerTerminology)


def registerTerminology() -> None:
    """Load the extension's terminology context (Resources/Terminology), which spinekit's segments name."""
    from spinekit.mrml.resources import register_terminology

    register_terminology(slicer.modules.terminologies.logic())


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
    task: Annotated[str, Choice(["all", *TASKS])] = "all"
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
        self.ui.modelButton.enabled = ready and not self.logic.running
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
            table, _markups = self.logic.measure(p.spineSegmentation, p.muscleSegmentation, p.ctVolume,
                                                 self._onProgress)  # fmt: skip
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
                subject = {"sex": p.sex, "age": p.ageYears, "height_cm": p.heightCm, "weight_kg": p.weightKg}
                tasks = self.logic.buildAndRunModel(p.spineSegmentation, p.muscleSegmentation, p.ctVolume, subject,
                                                    p.task, p.baseModel, self._onProgress)  # fmt: skip
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

    def __init__(self, runner=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = runner
        self.running = False
        self._cancelRequested = False
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

    def _writeInputs(self, spineSegmentation, muscleSegmentation, ctVolume, workdir):
        """Label maps (and CT) as files on one grid: {"spine": path, "muscles": path | None, "image": path | None}."""
        from spinekit.io import write_labels, write_volume
        from spinekit.mrml import node_to_volume, segmentation_node_to_labels

        workdir = Path(workdir or tempfile.mkdtemp(prefix="SpineBiomech-"))
        reference = node_to_volume(ctVolume) if ctVolume else self._segmentationGrid(spineSegmentation)
        spine = segmentation_node_to_labels(spineSegmentation, reference, "spine")
        paths = {"workdir": workdir, "spine": write_labels(spine, workdir / "spine.nii.gz"), "muscles": None}
        paths["image"] = write_volume(reference, workdir / "ct.nii.gz") if ctVolume else None
        if muscleSegmentation:
            muscles = segmentation_node_to_labels(muscleSegmentation, reference, "muscles")
            paths["muscles"] = write_labels(muscles, workdir / "muscles.nii.gz")
        return paths

    def measure(self, spineSegmentation, muscleSegmentation=None, ctVolume=None, progress=None, workdir=None):
        """Run ``spinekit measure``; returns (metrics table node, vertebral centroid markups node)."""
        from spinekit.mrml.commands import measure_arguments
        from spinekit.mrml.results import load_measure_outputs

        paths = self._writeInputs(spineSegmentation, muscleSegmentation, ctVolume, workdir)
        out = paths["workdir"] / "measure"
        self._run("measure", measure_arguments(paths["spine"], out, paths["image"], paths["muscles"]), progress)
        return load_measure_outputs(out, slicer.mrmlScene, spineSegmentation.GetName())

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

    def buildAndRunModel(self, spineSegmentation, muscleSegmentation, ctVolume, subject, task="all", baseModel="",
                         progress=None, workdir=None):  # fmt: skip
        """Run ``spinekit biomech``; returns the task names of ``risk.csv`` (``subject``: sex, age, height_cm,
        weight_kg). Adds the risk table as a table node."""
        from spinekit.mrml import metrics_to_table_node
        from spinekit.mrml.commands import biomech_arguments
        from spinekit.mrml.plots import risk_tasks
        from spinekit.mrml.results import read_risk

        paths = self._writeInputs(spineSegmentation, muscleSegmentation, ctVolume, workdir)
        out = paths["workdir"] / "biomech"
        arguments = biomech_arguments(paths["spine"], out, muscles=paths["muscles"], image=paths["image"],
                                      tasks=[task], base_model=baseModel or None, **subject)  # fmt: skip
        self._run("biomech", arguments, progress)
        self.riskFrame = read_risk(out)
        metrics_to_table_node(self.riskFrame, slicer.mrmlScene, "load-to-strength ratio")
        return risk_tasks(self.riskFrame)

    def showRisk(self, segmentationNode, task: str) -> str:
        """Recolour vertebra segments by their ratio for ``task``; returns the legend text."""
        from spinekit.mrml.colors import risk_legend
        from spinekit.mrml.results import color_segments_by_risk

        color_segments_by_risk(segmentationNode, self.riskFrame, task)
        return risk_legend()

    def riskChart(self, task: str):
        from spinekit.mrml import risk_bar_chart

        return risk_bar_chart(self.riskFrame, slicer.mrmlScene, task)


#
# SpineBiomechTest
#


#: (vertebra, label, factor of risk, class) of the fake risk.csv: one low, one high.
RISK_ROWS = (("L3", 22, 0.5, "low"), ("L4", 23, 1.5, "high"))


class FakeBiomechRunner:
    """Stands in for ``spinekit measure`` / ``biomech``: parses each command with the real parser, writes small
    tables with the stages' real column layout."""

    def __init__(self) -> None:
        self.arguments = {}

    def run(self, command, on_line, should_cancel) -> int:
        from spinekit.mrml.commands import parse_stage_arguments

        subcommand, args = parse_stage_arguments(command)  # fails when the logic's flags drift from the stage CLIs
        self.arguments[subcommand] = args
        args.out.mkdir(parents=True, exist_ok=True)
        if subcommand == "measure":
            header = "subject,structure,label,metric,value,unit,method,reason"
            rows = [f"s,L4,23,centroid_{a}_lps,{v},mm,mean," for a, v in zip("xyz", (1.0, 2.0, 3.0), strict=True)]
            rows.append("s,psoas_left L4,1,centroid_x_lps,9.0,mm,mean,")  # a muscle row: not a vertebra centroid
            (args.out / "metrics.csv").write_text("\n".join([header, *rows, "s,L4,23,vertebra_volume,27.5,mm3,n,"]))
        else:
            columns = "subject,vertebra,label,task,load_N,strength_N,factor_of_risk,class,converged,strength_method"
            rows = [f"s,{v},{n},lift20_close,{f * 2000},2000,{f},{c},True,qct," for v, n, f, c in RISK_ROWS]
            (args.out / "risk.csv").write_text("\n".join([columns + ",reason", *rows]))
        return 0


class SpineBiomechTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MeasureModelAndRiskWithFakeRunner()

    def test_MeasureModelAndRiskWithFakeRunner(self):
        from spinekit.mrml import labels_to_segmentation_node, markups_to_points_lps, volume_to_node
        from spinekit.mrml.colors import RISK_BANDS
        from spinekit.mrml.testing import small_phantom

        phantom = small_phantom()
        ct = volume_to_node(phantom.image, slicer.mrmlScene, "ct")
        segmentation = labels_to_segmentation_node(phantom.spine, slicer.mrmlScene, "spine", "spine")
        runner = FakeBiomechRunner()
        logic = SpineBiomechLogic(runner)
        table, markups = logic.measure(segmentation, None, ct)
        self.assertEqual(table.GetTable().GetNumberOfRows(), 5)
        self.assertEqual([(label, list(xyz)) for label, xyz in markups_to_points_lps(markups)], [("L4", [1, 2, 3])])
        self.assertIsNotNone(runner.arguments["measure"].image)
        subject = {"sex": "female", "age": 60, "height_cm": 165.0, "weight_kg": 62.5}
        tasks = logic.buildAndRunModel(segmentation, None, ct, subject, "lift20_close")
        args = runner.arguments["biomech"]
        self.assertEqual((args.sex, args.age, args.height_cm, args.weight_kg), ("female", 60.0, 165.0, 62.5))
        self.assertEqual((args.tasks, args.base_model), (["lift20_close"], None))
        self.assertEqual(tasks, ["lift20_close"])
        logic.showRisk(segmentation, "lift20_close")
        colors = dict(RISK_BANDS)
        self.assertAlmostEqual(segmentation.GetSegmentation().GetSegment("L4").GetColor()[0], colors["high"][0])
        self.assertAlmostEqual(segmentation.GetSegmentation().GetSegment("L3").GetColor()[1], colors["low"][1])
        self.assertEqual(logic.riskChart("lift20_close").GetNumberOfPlotSeriesNodes(), 3)
        self.delayDisplay("SpineBiomech logic test passed")
