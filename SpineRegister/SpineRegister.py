"""SpineRegister: register a follow-up scan to baseline vertebra by vertebra and show per-level change.

Template order: Module, parameter node, Widget (Qt only), Logic (delegates to ``spinekit register``, run
out of process), Test. One transform node per vertebra lands in a subject-hierarchy folder; placing the
follow-up volume under a level's transform shows it aligned to baseline at that level.
"""

import tempfile
from pathlib import Path

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# SpineRegister
#


class SpineRegister(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Spine Register")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "SpineBiomech")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["SpineBiomech developers"]
        self.parent.helpText = _(
            "Register a follow-up spine scan to baseline one vertebra at a time (rigid, segmentation-guided) "
            "and tabulate per-vertebra change: height loss, wedge angle, translation and rotation."
        )
        self.parent.acknowledgementText = _("Built on SimpleITK (Lowekamp et al. 2013) and 3D Slicer.")


#
# SpineRegisterParameterNode
#


@parameterNodeWrapper
class SpineRegisterParameterNode:
    baselineVolume: vtkMRMLScalarVolumeNode
    baselineSegmentation: vtkMRMLSegmentationNode
    followupVolume: vtkMRMLScalarVolumeNode
    followupSegmentation: vtkMRMLSegmentationNode


#
# SpineRegisterWidget
#


class SpineRegisterWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineRegister.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineRegisterLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.registerButton.connect("clicked(bool)", self.onRegisterButton)
        self.ui.cancelButton.connect("clicked(bool)", self.logic.cancel)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
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
        p = self._parameterNode
        ready = bool(p and p.baselineVolume and p.baselineSegmentation and p.followupVolume)
        self.ui.registerButton.enabled = ready and not self.logic.running
        self.ui.compareButton.enabled = self.ui.levelComboBox.count > 0

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.progressBar.setFormat(f"{message} %p%" if message else "%p%")
        slicer.app.processEvents()

    def onRegisterButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self.ui.progressBar.visible, self.ui.cancelButton.enabled = True, True
            try:
                result = self.logic.register(
                    p.baselineVolume,
                    p.baselineSegmentation,
                    p.followupVolume,
                    p.followupSegmentation,
                    progress=self._onProgress,
                )
            finally:
                self.ui.progressBar.visible, self.ui.cancelButton.enabled = False, False
            self.ui.levelComboBox.clear()
            self.ui.levelComboBox.addItems(list(result["transforms"]))
            self.ui.statusLabel.text = _("{n} vertebrae registered").format(n=len(result["transforms"]))
            self._checkCanApply()

    def onCompareButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not show the comparison."), waitCursor=True):
            self.logic.showComparison(p.baselineVolume, p.followupVolume, self.ui.levelComboBox.currentText)


#
# SpineRegisterLogic
#


class SpineRegisterLogic(ScriptedLoadableModuleLogic):
    """Thin logic around ``spinekit register``; the process runner is injected (see spinekit.mrml.process)."""

    FOLDER = "SpineRegister transforms"

    def __init__(self, runner=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = runner
        self.running = False
        self._cancelRequested = False
        self.transforms = {}

    def getParameterNode(self):
        return SpineRegisterParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> bool:
        from spinekit.mrml.dependencies import ensure_dependencies

        pipInstall = getattr(getattr(slicer, "packaging", None), "pip_ensure", None) or slicer.util.pip_install
        return ensure_dependencies(["core"], slicer.util.confirmOkCancelDisplay, pipInstall)

    def cancel(self) -> None:
        self._cancelRequested = True

    def register(
        self,
        baselineVolume,
        baselineSegmentation,
        followupVolume,
        followupSegmentation=None,
        progress=None,
        workdir=None,
    ):
        """Run ``spinekit register``; returns {"transforms": {level: transform node}, "table": table node}."""
        import pandas as pd

        from spinekit.io import write_labels, write_volume
        from spinekit.mrml import (
            metrics_to_table_node,
            node_to_volume,
            put_in_folder,
            segmentation_node_to_labels,
            sitk_transform_file_to_node,
        )
        from spinekit.mrml.process import run_spinekit, spinekit_command

        workdir = Path(workdir or tempfile.mkdtemp(prefix="SpineRegister-"))
        baseline, followup = node_to_volume(baselineVolume), node_to_volume(followupVolume)
        arguments = ["--baseline-image", write_volume(baseline, workdir / "baseline.nii.gz")]
        labels = segmentation_node_to_labels(baselineSegmentation, baseline, "spine")
        arguments += ["--baseline-labels", write_labels(labels, workdir / "baseline_spine.nii.gz")]
        arguments += ["--followup-image", write_volume(followup, workdir / "followup.nii.gz")]
        if followupSegmentation is not None:
            labels = segmentation_node_to_labels(followupSegmentation, followup, "spine")
            arguments += ["--followup-labels", write_labels(labels, workdir / "followup_spine.nii.gz")]
        arguments += ["--output-dir", workdir / "out"]
        self.running, self._cancelRequested = True, False
        try:
            run_spinekit(spinekit_command("register", arguments), self.runner, progress, self._shouldCancel)
        finally:
            self.running = False
        self.transforms = {}
        for path in sorted((workdir / "out" / "transforms").glob("*.tfm")):
            level = path.name[: -len(".tfm")]
            self.transforms[level] = sitk_transform_file_to_node(
                path, slicer.mrmlScene, f"{level} follow-up to baseline"
            )
        table = metrics_to_table_node(
            pd.read_csv(workdir / "out" / "change.csv", dtype={"reason": str}).fillna({"reason": ""}),
            slicer.mrmlScene,
            "vertebra change",
        )
        put_in_folder(slicer.mrmlScene, [*self.transforms.values(), table], self.FOLDER)
        return {"transforms": self.transforms, "table": table}

    def _shouldCancel(self) -> bool:
        slicer.app.processEvents()
        return self._cancelRequested

    def showComparison(self, baselineVolume, followupVolume, level: str) -> None:
        """Side-by-side linked views: baseline left, follow-up aligned at ``level`` right."""
        if level not in self.transforms:
            raise ValueError(_("No transform for level {level}; run the registration first").format(level=level))
        followupVolume.SetAndObserveTransformNodeID(self.transforms[level].GetID())
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for viewName, volume in (("Red", baselineVolume), ("Yellow", followupVolume)):
            sliceLogic = layoutManager.sliceWidget(viewName).sliceLogic()
            sliceLogic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
            sliceLogic.GetSliceCompositeNode().SetLinkedControl(True)
            sliceLogic.GetSliceNode().SetOrientationToSagittal()
        slicer.util.resetSliceViews()


#
# SpineRegisterTest
#


class FakeRegisterRunner:
    """Stands in for ``spinekit register``: identity transform per level and a one-row change table."""

    def __init__(self, levels) -> None:
        self.levels = levels
        self.commands = []

    def run(self, command, on_line, should_cancel) -> int:
        import SimpleITK as sitk

        self.commands.append(list(command))
        out = Path(command[command.index("--output-dir") + 1])
        (out / "transforms").mkdir(parents=True, exist_ok=True)
        for index, level in enumerate(self.levels):
            on_line(f"progress {(index + 1) / len(self.levels):.2f} registering {level}")
            sitk.WriteTransform(sitk.TranslationTransform(3, (1.0, 2.0, 3.0)), str(out / "transforms" / f"{level}.tfm"))
        rows = "\n".join(f"s,{level},0,translation,3.742,mm,rigid," for level in self.levels)
        (out / "change.csv").write_text("subject,structure,label,metric,value,unit,method,reason\n" + rows + "\n")
        return 0


class SpineRegisterTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_RegisterWithFakeRunner()

    def test_RegisterWithFakeRunner(self):
        from spinekit.mrml import labels_to_segmentation_node, volume_to_node
        from spinekit.mrml.testing import small_spine

        image, labels = small_spine()
        baseline = volume_to_node(image, slicer.mrmlScene, "baseline")
        followup = volume_to_node(image, slicer.mrmlScene, "follow-up")
        segmentation = labels_to_segmentation_node(labels, slicer.mrmlScene, "spine", "baseline spine")
        runner = FakeRegisterRunner(["L3", "L4"])
        result = SpineRegisterLogic(runner).register(baseline, segmentation, followup)
        self.assertEqual(sorted(result["transforms"]), ["L3", "L4"])
        self.assertEqual(result["table"].GetTable().GetNumberOfRows(), 2)
        # ITK translation (1, 2, 3) mm LPS maps fixed -> moving: Slicer's "from parent" moves RAS by (-1, -2, 3).
        moved = result["transforms"]["L4"].GetTransformFromParent().TransformPoint((0.0, 0.0, 0.0))
        self.assertAlmostEqual(moved[0], -1.0)
        self.assertAlmostEqual(moved[1], -2.0)
        self.assertAlmostEqual(moved[2], 3.0)
        self.delayDisplay("SpineRegister logic test passed")
