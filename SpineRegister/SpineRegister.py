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

    def register(self, baselineVolume, baselineSegmentation, followupVolume, followupSegmentation=None,
                 progress=None, workdir=None):  # fmt: skip
        """Run ``spinekit register``; returns {"transforms": {level: transform node}, "table": change table node}.

        Each level's node maps follow-up points onto baseline points (``spinekit register`` README.txt): a
        follow-up volume placed under it lies on the baseline at that level.
        """
        from spinekit.io import write_labels, write_volume
        from spinekit.mrml import node_to_volume, segmentation_node_to_labels
        from spinekit.mrml.commands import register_arguments
        from spinekit.mrml.longitudinal import load_registration_outputs
        from spinekit.mrml.process import run_spinekit, spinekit_command

        workdir = Path(workdir or tempfile.mkdtemp(prefix="SpineRegister-"))
        baseline, followup = node_to_volume(baselineVolume), node_to_volume(followupVolume)
        baselineSpine = segmentation_node_to_labels(baselineSegmentation, baseline, "spine")
        followupSpine = None
        if followupSegmentation is not None:
            labels = segmentation_node_to_labels(followupSegmentation, followup, "spine")
            followupSpine = write_labels(labels, workdir / "followup_spine.nii.gz")
        arguments = register_arguments(
            write_volume(baseline, workdir / "baseline.nii.gz"),
            write_labels(baselineSpine, workdir / "baseline_spine.nii.gz"),
            write_volume(followup, workdir / "followup.nii.gz"),
            workdir / "out",
            followupSpine,
        )
        self.running, self._cancelRequested = True, False
        try:
            run_spinekit(spinekit_command("register", arguments), self.runner, progress, self._shouldCancel)
        finally:
            self.running = False
        nodes = load_registration_outputs(workdir / "out", slicer.mrmlScene, self.FOLDER)
        self.transforms = nodes.transforms
        return {"transforms": nodes.transforms, "table": nodes.table}

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
    """Stands in for ``spinekit register``: parses the command with the real parser and writes the true motions.

    Each ``<level>_followup_to_baseline.tfm`` holds the phantom's truth (baseline LPS -> follow-up LPS), the
    convention ``spinekit register`` writes (see its README.txt).
    """

    def __init__(self, motions) -> None:
        self.motions = motions
        self.arguments = []

    def run(self, command, on_line, should_cancel) -> int:
        import numpy as np
        import SimpleITK as sitk

        from spinekit.mrml.commands import parse_stage_arguments

        _, args = parse_stage_arguments(command)  # fails when the logic's flags drift from spinekit/register/cli.py
        self.arguments.append(args)
        args.out.mkdir(parents=True, exist_ok=True)
        for index, (level, motion) in enumerate(self.motions.items()):
            on_line(f"register:  {index}%|#| {index}/{len(self.motions)} [00:01<00:01, 1.0%/s, registering {level}]")
            matrix = np.asarray(motion["matrix"], dtype=float)
            transform = sitk.AffineTransform(matrix[:3, :3].ravel().tolist(), matrix[:3, 3].tolist())
            sitk.WriteTransform(transform, str(args.out / f"{level}_followup_to_baseline.tfm"))
        rows = "\n".join(f"s,{level},0,translation,3.742,mm,rigid," for level in self.motions)
        (args.out / "changes.csv").write_text("subject,structure,label,metric,value,unit,method,reason\n" + rows + "\n")
        return 0


class SpineRegisterTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_RegisterWithFakeRunner()

    def test_RegisterWithFakeRunner(self):
        import numpy as np

        from spinekit.mrml import labels_to_segmentation_node, volume_to_node
        from spinekit.mrml.geometry import lps_to_ras, ras_to_lps
        from spinekit.mrml.testing import small_followup, small_phantom

        phantom, followupPhantom = small_phantom(), small_followup()
        baseline = volume_to_node(phantom.image, slicer.mrmlScene, "baseline")
        followup = volume_to_node(followupPhantom.image, slicer.mrmlScene, "follow-up")
        segmentation = labels_to_segmentation_node(phantom.spine, slicer.mrmlScene, "spine", "baseline spine")
        motions = followupPhantom.truth["followup"]["motions"]
        runner = FakeRegisterRunner(motions)
        result = SpineRegisterLogic(runner).register(baseline, segmentation, followup)
        self.assertIsNone(runner.arguments[0].followup_spine)
        self.assertEqual(list(result["transforms"]), ["L2", "L3", "L4"])
        self.assertEqual(result["table"].GetTable().GetNumberOfRows(), 3)
        # A follow-up point placed under the L3 node lands on its baseline point (phantom truth).
        pointBaseline = np.asarray(phantom.truth["vertebrae"]["L3"]["body_centroid_lps"])
        pointFollowup = (np.asarray(motions["L3"]["matrix"]) @ np.append(pointBaseline, 1.0))[:3]
        moved = result["transforms"]["L3"].GetTransformToParent().TransformPoint(tuple(lps_to_ras(pointFollowup)))
        self.assertLess(float(np.linalg.norm(ras_to_lps(np.array(moved)) - pointBaseline)), 1e-6)
        self.delayDisplay("SpineRegister logic test passed")
