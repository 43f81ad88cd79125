"""A headless MRML scene set up the way the Slicer application sets it up at start-up."""

from __future__ import annotations

import slicer

#: Converter rules the Slicer application registers at start-up (qSlicerSegmentationsModule::setup).
_CONVERTER_RULES = (
    "vtkBinaryLabelmapToClosedSurfaceConversionRule",
    "vtkClosedSurfaceToBinaryLabelmapConversionRule",
    "vtkClosedSurfaceToFractionalLabelmapConversionRule",
    "vtkFractionalLabelmapToClosedSurfaceConversionRule",
)


def register_converter_rules() -> None:
    """Register the segmentation representation converters once per process (idempotent)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for class_name in _CONVERTER_RULES:
        if class_name not in present:
            factory.RegisterConverterRule(getattr(slicer, class_name)())


def new_scene() -> slicer.vtkMRMLScene:
    """An empty scene with the segmentations logic attached and converter rules registered.

    In the Slicer application use ``slicer.mrmlScene`` instead; this is for tests and headless scripts
    on the ``slicer-core`` wheel, where no application builds the scene.
    """
    register_converter_rules()
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    # The logic observes scene events (display nodes for new segmentations); keep it alive with the scene.
    scene.spinekit_segmentations_logic = logic
    return scene
