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
        self.ui.saveCorrectionButton.connect("clicked(bool)", self.onSaveCorrectionButton)
        for placeWidget, kind in ((self.ui.positivePlaceWidget, "positive"), (self.ui.negativePlaceWidget, "negative")):
            placeWidget.setCurrentNode(self.logic.clickNode(kind))
        for kind in ("positive", "negative"):
            self.addObserver(
                self.logic.clickNode(kind), slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onClickPlaced
            )
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
                node, qcFlags = self.logic.segment(
                    p.inputVolume,
                    p.segmentSpine,
                    p.segmentMuscles,
                    p.modality,
                    p.backend,
                    p.device,
                    outputNode=p.outputSegmentation,
                    progress=self._onProgress,
                )
            finally:
                self._setRunning(False)
            p.outputSegmentation = node
            self.ui.segmentSelector.setCurrentNode(node)
            self.ui.qcLabel.text = "; ".join(qcFlags) if qcFlags else _("no quality flags")

    def onClickPlaced(self, caller, event) -> None:
        node = self.ui.segmentSelector.currentNode()
        segmentId = self.ui.segmentSelector.currentSegmentID()
        if not node or not segmentId or not self._parameterNode.inputVolume:
            return
        with slicer.util.tryWithErrorDisplay(_("Correction failed."), waitCursor=True):
            seconds = self.logic.applyClicks(self._parameterNode.inputVolume, node, segmentId)
            self.ui.latencyLabel.text = _("{seconds:.2f} s").format(seconds=seconds)
            self.ui.undoButton.enabled = self.logic.canUndo()

    def onUndoButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Undo failed."), waitCursor=True):
            self.logic.undo()
            self.ui.undoButton.enabled = self.logic.canUndo()

    def onSaveCorrectionButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, _("Folder for corrected training cases"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Saving the correction failed."), waitCursor=True):
            p = self._parameterNode
            path = self.logic.saveCorrection(p.inputVolume, self.ui.segmentSelector.currentNode(), Path(folder))
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
        self._undoStack = []  # (segmentation node, segment ID, previous mask Volume)
        self._clickNodes = {}

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
        slicer.app.processEvents() if hasattr(slicer, "app") else None
        return self._cancelRequested

    def segment(
        self,
        volumeNode,
        spine=True,
        muscles=False,
        modality="auto",
        backend="spinekit",
        device="auto",
        outputNode=None,
        progress=None,
        workdir=None,
    ):
        """Run ``spinekit segment`` on ``volumeNode``; returns (segmentation node, list of QC flags)."""
        from spinekit.io import read_labels, write_volume
        from spinekit.mrml import labels_to_segmentation_node, node_to_volume
        from spinekit.mrml.process import run_spinekit, spinekit_command

        targets = ",".join(t for t, on in (("spine", spine), ("muscles", muscles)) if on)
        workdir = Path(workdir or tempfile.mkdtemp(prefix="SpineSegment-"))
        image = write_volume(node_to_volume(volumeNode), workdir / "image.nii.gz")
        arguments = ["--input", image, "--output-dir", workdir / "out", "--targets", targets]
        arguments += ["--modality", modality, "--backend", backend, "--device", device]
        command = spinekit_command("segment", arguments)
        self.running, self._cancelRequested = True, False
        try:
            run_spinekit(command, self.runner, progress, self._shouldCancel)
        finally:
            self.running = False
        reference = node_to_volume(volumeNode)
        node = None
        for kind in targets.split(","):
            labels = read_labels(workdir / "out" / f"{kind}.nii.gz", reference)
            name = f"{volumeNode.GetName()} {kind}"
            if kind == "spine" and outputNode is not None:
                slicer.mrmlScene.RemoveNode(outputNode)
            created = labels_to_segmentation_node(labels, slicer.mrmlScene, kind, name)
            created.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            node = node or created
        qcPath = workdir / "out" / "qc.json"
        qcFlags = json.loads(qcPath.read_text()).get("flags", []) if qcPath.is_file() else []
        return node, qcFlags

    def clickNode(self, kind: str):
        """The markups node holding the positive or negative correction clicks (created on demand)."""
        node = self._clickNodes.get(kind)
        if node is None or node.GetScene() is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"SpineSegment {kind} clicks")
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetSelectedColor((0.1, 0.8, 0.1) if kind == "positive" else (0.9, 0.1, 0.1))
            self._clickNodes[kind] = node
        return node

    def applyClicks(self, volumeNode, segmentationNode, segmentId) -> float:
        """Refine one segment from all clicks so far (in process); returns the latency in seconds."""
        from spinekit.mrml import markups_to_points_lps, node_to_volume, update_segment_from_mask
        from spinekit.mrml.segmentations import segment_mask
        from spinekit.segment import interactive  # written by the segment stage

        start = time.perf_counter()
        image = node_to_volume(volumeNode)
        previous = image.with_array(segment_mask(segmentationNode, segmentId, image).astype("uint8"))
        positive = [p for _, p in markups_to_points_lps(self.clickNode("positive"))]
        negative = [p for _, p in markups_to_points_lps(self.clickNode("negative"))]
        mask = interactive.refine(image, previous, positive_lps=positive, negative_lps=negative)
        update_segment_from_mask(segmentationNode, segmentId, mask)
        self._undoStack.append((segmentationNode, segmentId, previous))
        return time.perf_counter() - start

    def canUndo(self) -> bool:
        return bool(self._undoStack)

    def undo(self) -> None:
        """Put back the segment as it was before the last click and forget that click."""
        from spinekit.mrml import update_segment_from_mask

        node, segmentId, previous = self._undoStack.pop()
        update_segment_from_mask(node, segmentId, previous)
        for kind in ("positive", "negative"):
            clicks = self.clickNode(kind)
            if clicks.GetNumberOfControlPoints():
                clicks.RemoveNthControlPoint(clicks.GetNumberOfControlPoints() - 1)
                break

    def saveCorrection(self, volumeNode, segmentationNode, folder: Path) -> Path:
        """Write image and corrected labels as a training case ``<folder>/<name>_<time>/``."""
        from spinekit.io import write_labels, write_volume
        from spinekit.mrml import node_to_volume, segmentation_node_to_labels

        image = node_to_volume(volumeNode)
        case = Path(folder) / f"{volumeNode.GetName()}_{time.strftime('%Y%m%d-%H%M%S')}"
        case.mkdir(parents=True, exist_ok=False)
        write_volume(image, case / "image.nii.gz")
        write_labels(segmentation_node_to_labels(segmentationNode, image, "spine"), case / "spine.nii.gz")
        return case


#
# SpineSegmentTest
#


class FakeSegmentRunner:
    """Stands in for ``spinekit segment``: writes the phantom's true labels where the CLI would."""

    def __init__(self, labels) -> None:
        self.labels = labels
        self.commands = []

    def run(self, command, on_line, should_cancel) -> int:
        from spinekit.io import write_labels

        self.commands.append(list(command))
        out = Path(command[command.index("--output-dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        for step in range(1, 5):
            on_line(f"segment: {25 * step}%|##| {step}/4 [00:00<00:00]")
        write_labels(self.labels, out / "spine.nii.gz")
        (out / "qc.json").write_text(json.dumps({"flags": []}))
        return 0


class SpineSegmentTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentWithFakeRunner()

    def test_SegmentWithFakeRunner(self):
        import numpy as np

        from spinekit.mrml import segmentation_node_to_labels, volume_to_node
        from spinekit.mrml.testing import small_spine

        image, labels = small_spine()
        volumeNode = volume_to_node(image, slicer.mrmlScene, "phantom")
        runner = FakeSegmentRunner(labels)
        fractions = []
        node, flags = SpineSegmentLogic(runner).segment(volumeNode, progress=lambda f, m: fractions.append(f))
        self.assertEqual(fractions, [0.25, 0.5, 0.75, 1.0])
        self.assertEqual(flags, [])
        self.assertIn("--targets", runner.commands[0])
        back = segmentation_node_to_labels(node, image, "spine")
        self.assertTrue(np.array_equal(back.array, labels.array))
        self.delayDisplay("SpineSegment logic test passed")
