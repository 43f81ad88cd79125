"""SpineSegment: segment vertebrae, discs, canal and paraspinal muscles; correct them with clicks.

Module -> parameter node -> Widget (Qt only) -> Logic (delegates to spinekit) -> Test, in the order of
Slicer's scripted-module template. Segmentation runs out of process (``PythonSlicer -m spinekit segment``);
click corrections run in process through ``spinekit.segment.interactive``.
"""

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# SpineSegment
#


class SpineSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Spine Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "SpineBiomech")]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["SpineBiomech developers"]
        self.parent.helpText = _(
            "Segment vertebrae (VerSe numbering), intervertebral discs, spinal canal and paraspinal muscles "
            "from CT or MRI, then correct any segment with positive and negative clicks."
        )
        self.parent.acknowledgementText = _(
            "Built on MONAI, SimpleITK and 3D Slicer. Label conventions follow VerSe (Loeffler et al. 2020)."
        )


#
# SpineSegmentParameterNode
#


@parameterNodeWrapper
class SpineSegmentParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    segmentSpine: bool = True
    segmentMuscles: bool = False
    modality: Annotated[str, Choice(["auto", "CT", "MRI"])] = "auto"
    backend: Annotated[str, Choice(["spinekit", "totalsegmentator"])] = "spinekit"
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    outputSegmentation: vtkMRMLSegmentationNode


#
# SpineSegmentWidget
#


class SpineSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineSegmentLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.cancelButton.connect("clicked(bool)", self.logic.cancel)
        self.ui.undoButton.connect("clicked(bool)", self.onUndoButton)
        self.ui.redoButton.connect("clicked(bool)", self.onRedoButton)
        self.ui.saveCorrectionButton.connect("clicked(bool)", self.onSaveCorrectionButton)
        for placeWidget, kind in ((self.ui.positivePlaceWidget, "positive"), (self.ui.negativePlaceWidget, "negative")):
            placeWidget.setCurrentNode(self.logic.clickNode(kind))
            self.addObserver(self.logic.clickNode(kind), slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                             self.onClickPlaced)  # fmt: skip
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
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

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
        ready = bool(p and p.inputVolume and (p.segmentSpine or p.segmentMuscles))
        self.ui.segmentButton.enabled = ready and not self.logic.running
        self.ui.segmentButton.toolTip = _("Segment the input volume") if ready else _("Select an input volume")

    def _setRunning(self, running: bool) -> None:
        self.ui.progressBar.visible = running
        self.ui.cancelButton.enabled = running
        self._checkCanApply()

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.progressBar.setFormat(f"{message} %p%" if message else "%p%")
        slicer.app.processEvents()

    def onSegmentButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self._setRunning(True)
            try:
                args = (p.inputVolume, p.segmentSpine, p.segmentMuscles, p.modality, p.backend, p.device)
                node, qcFlags = self.logic.segment(*args, p.outputSegmentation, self._onProgress)
            finally:
                self._setRunning(False)
            p.outputSegmentation = node
            self.ui.segmentSelector.setCurrentNode(node)
            self.ui.qcLabel.text = "; ".join(qcFlags) if qcFlags else _("no quality flags")

    def onClickPlaced(self, caller, event) -> None:
        node = self.ui.segmentSelector.currentNode()
        segmentId = self.ui.segmentSelector.currentSegmentID()
        if not node or not segmentId or not self._parameterNode.inputVolume or not caller.GetNumberOfControlPoints():
            return
        point = [0.0, 0.0, 0.0]
        caller.GetNthControlPointPositionWorld(caller.GetNumberOfControlPoints() - 1, point)
        positive = caller is self.logic.clickNode("positive")
        with slicer.util.tryWithErrorDisplay(_("Correction failed."), waitCursor=True):
            result = self.logic.addClick(self._parameterNode.inputVolume, node, segmentId, point, positive)
            text = _("{seconds:.2f} s, +{added} / -{removed} voxels").format(
                seconds=result.seconds, added=result.added, removed=result.removed
            )
            self.ui.latencyLabel.text = f"{text} ({result.note})" if result.note else text
        self._updateUndoRedo()

    def _updateUndoRedo(self) -> None:
        self.ui.undoButton.enabled = self.logic.canUndo()
        self.ui.redoButton.enabled = self.logic.canRedo()

    def onUndoButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Undo failed."), waitCursor=True):
            self.logic.undo()
        self._updateUndoRedo()

    def onRedoButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Redo failed."), waitCursor=True):
            self.logic.redo()
        self._updateUndoRedo()

    def onSaveCorrectionButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, _("Folder for corrected training cases"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Saving the correction failed."), waitCursor=True):
            path = self.logic.saveCorrection(Path(folder))
            slicer.util.showStatusMessage(_("Saved {path}").format(path=path), 3000)


#
# SpineSegmentLogic
#


class SpineSegmentLogic(ScriptedLoadableModuleLogic):
    """Thin logic: files in, ``spinekit segment`` out of process, nodes back; clicks through spinekit.

    Args:
        runner: a ``spinekit.mrml.process.ProcessRunner``; the default runs a real child process.
    """

    def __init__(self, runner=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = runner
        self.running = False
        self._cancelRequested = False
        self._clickNodes = {}
        self.editor = None  # spinekit.mrml.interactive.SegmentEditorSession of the segmentation being corrected

    def getParameterNode(self):
        return SpineSegmentParameterNode(super().getParameterNode())

    def ensureDependencies(self, features=("core", "segment")) -> bool:
        from spinekit.mrml.dependencies import ensure_dependencies

        def installTorch() -> bool:
            import PyTorchUtils  # the PyTorch extension, declared in EXTENSION_DEPENDS

            return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is not None

        pipInstall = getattr(getattr(slicer, "packaging", None), "pip_ensure", None) or slicer.util.pip_install
        return ensure_dependencies(features, slicer.util.confirmOkCancelDisplay, pipInstall, installTorch)

    def cancel(self) -> None:
        self._cancelRequested = True

    def _shouldCancel(self) -> bool:
        slicer.app.processEvents()
        return self._cancelRequested

    def segment(self, volumeNode, spine=True, muscles=False, modality="auto", backend="spinekit", device="auto",
                outputNode=None, progress=None, workdir=None):  # fmt: skip
        """Run ``spinekit segment`` on ``volumeNode``; returns (first segmentation node, QC flags as text)."""
        from spinekit.io import read_labels, write_volume
        from spinekit.mrml import labels_to_segmentation_node, node_to_volume
        from spinekit.mrml.commands import segment_arguments, segment_qc_flags
        from spinekit.mrml.process import run_spinekit, spinekit_command

        workdir = Path(workdir or tempfile.mkdtemp(prefix="SpineSegment-"))
        reference = node_to_volume(volumeNode)
        image = write_volume(reference, workdir / "image.nii.gz")
        out = workdir / "out"
        arguments = segment_arguments(image, out, spine, muscles, modality, backend, device)
        self.running, self._cancelRequested = True, False
        try:
            run_spinekit(spinekit_command("segment", arguments), self.runner, progress, self._shouldCancel)
        finally:
            self.running = False
        nodes = []
        for kind in [k for k, on in (("spine", spine), ("muscles", muscles)) if on]:
            labels = read_labels(out / f"{kind}.nii.gz", reference)
            if kind == "spine" and outputNode is not None:
                slicer.mrmlScene.RemoveNode(outputNode)
            node = labels_to_segmentation_node(labels, slicer.mrmlScene, kind, f"{volumeNode.GetName()} {kind}")
            node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            nodes.append(node)
        return nodes[0], segment_qc_flags(out)

    def clickNode(self, kind: str):
        """The markups node holding the positive or negative correction clicks (created on demand)."""
        node = self._clickNodes.get(kind)
        if node is None or node.GetScene() is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"SpineSegment {kind} clicks")
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetSelectedColor((0.1, 0.8, 0.1) if kind == "positive" else (0.9, 0.1, 0.1))
            self._clickNodes[kind] = node
        return node

    def editorFor(self, volumeNode, segmentationNode):
        """The click session of this volume and segmentation (a new one when either changed)."""
        from spinekit.mrml.interactive import SegmentEditorSession, installed_model, segmentation_kind

        editor = self.editor
        if editor is None or editor.volume_node is not volumeNode or editor.segmentation_node is not segmentationNode:
            kind = segmentation_kind(segmentationNode)
            self.editor = SegmentEditorSession(volumeNode, segmentationNode, kind, model=installed_model(kind))
        return self.editor

    def addClick(self, volumeNode, segmentationNode, segmentId, pointRas, positive=True):
        """Correct one segment around a RAS point (in process); returns spinekit's ``ClickResult``."""
        return self.editorFor(volumeNode, segmentationNode).add_click(pointRas, segmentId, positive)

    def canUndo(self) -> bool:
        return bool(self.editor and self.editor.can_undo)

    def canRedo(self) -> bool:
        return bool(self.editor and self.editor.can_redo)

    def undo(self) -> bool:
        return bool(self.editor and self.editor.undo())

    def redo(self) -> bool:
        return bool(self.editor and self.editor.redo())

    def saveCorrection(self, folder: Path) -> Path:
        """Write image, corrected labels and clicks as a training case ``<folder>/<volume>_<time>/``."""
        if self.editor is None:
            raise ValueError(_("Correct a segment with clicks first"))
        name = f"{self.editor.volume_node.GetName()}_{time.strftime('%Y%m%d-%H%M%S')}"
        return self.editor.save(Path(folder) / name)


#
# SpineSegmentTest
#


class FakeSegmentRunner:
    """Stands in for ``spinekit segment``: parses the command with the real parser, writes the truth where it would."""

    def __init__(self, phantom) -> None:
        self.phantom = phantom
        self.arguments = []

    def run(self, command, on_line, should_cancel) -> int:
        from spinekit.io import write_labels
        from spinekit.mrml.commands import parse_stage_arguments

        _, args = parse_stage_arguments(command)  # fails when the logic's flags drift from spinekit/segment/cli.py
        self.arguments.append(args)
        args.out.mkdir(parents=True, exist_ok=True)
        for step in range(1, 5):
            on_line(f"segment:  {25 * step}%|##| {25 * step}/100 [00:01<00:01, 9.9%/s, step {step}]")
        for kind in args.targets.split(","):
            write_labels(getattr(self.phantom, kind), args.out / f"{kind}.nii.gz")
        flags = [{"flag": "missing_levels", "label": None, "detail": "L1"}]
        (args.out / "segment.json").write_text(json.dumps({"qc": {"flags": flags}}))
        return 0


class SpineSegmentTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentWithFakeRunner()
        self.setUp()
        self.test_ClickCorrection()

    def test_SegmentWithFakeRunner(self):
        import numpy as np

        from spinekit.mrml import segmentation_node_to_labels, volume_to_node
        from spinekit.mrml.testing import small_phantom

        phantom = small_phantom()
        volumeNode = volume_to_node(phantom.image, slicer.mrmlScene, "phantom")
        runner, progress = FakeSegmentRunner(phantom), []
        node, flags = SpineSegmentLogic(runner).segment(volumeNode, True, True, "CT", device="cpu",
                                                        progress=lambda f, m: progress.append((f, m)))  # fmt: skip
        self.assertEqual(progress[-1], (1.0, "segment: step 4"))
        self.assertEqual(flags, ["missing_levels: L1"])
        args = runner.arguments[0]
        self.assertEqual((args.targets, args.modality, args.device), ("spine,muscles", "ct", "cpu"))
        self.assertTrue(np.array_equal(segmentation_node_to_labels(node, phantom.image).array, phantom.spine.array))
        muscles = slicer.mrmlScene.GetFirstNodeByName("phantom muscles")
        back = segmentation_node_to_labels(muscles, phantom.image, "muscles")
        self.assertTrue(np.array_equal(back.array, phantom.muscles.array))

    def test_ClickCorrection(self):
        import numpy as np

        from spinekit.mrml import labels_to_segmentation_node, volume_to_node
        from spinekit.mrml.geometry import lps_to_ras
        from spinekit.mrml.segmentations import segment_mask
        from spinekit.mrml.testing import small_phantom
        from spinekit.segment.clicks import break_remove_slab

        phantom = small_phantom()
        axis = phantom.truth["vertebrae"]["L3"]["superior_axis_lps"]
        broken = break_remove_slab(phantom.spine, 22, axis, thickness_mm=12.0)
        volumeNode = volume_to_node(phantom.image, slicer.mrmlScene, "phantom")
        node = labels_to_segmentation_node(broken, slicer.mrmlScene, "spine", "spine")
        before = {sid: segment_mask(node, sid, phantom.image) for sid in ("L3", "L4")}
        logic = SpineSegmentLogic()
        pointRas = lps_to_ras(np.asarray(phantom.truth["vertebrae"]["L3"]["body_centroid_lps"]))
        result = logic.addClick(volumeNode, node, "L3", pointRas, positive=True)
        self.assertGreater(result.added, 0)
        after = segment_mask(node, "L3", phantom.image)
        self.assertEqual(int(np.count_nonzero(after & ~before["L3"])), result.added)
        self.assertTrue(np.array_equal(segment_mask(node, "L4", phantom.image), before["L4"]))
        self.assertTrue(logic.undo())
        self.assertTrue(np.array_equal(segment_mask(node, "L3", phantom.image), before["L3"]))
        self.assertTrue(logic.canRedo())
        self.delayDisplay("SpineSegment logic test passed")
