"""Slicer terminology entries from the SNOMED-CT codes in :mod:`spinekit.labels`.

Slicer stores a segment's meaning as a serialized terminology entry (the ``TerminologyEntry`` tag of a
segment, ``vtkSegment.GetTerminologyEntryTagName()``), written by
``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry`` as
``context~SCT^category^meaning~SCT^type^meaning~typeModifier~anatomicContext~region~regionModifier``
(Slicer documentation, "Terminologies" module; DICOM PS3.3 C.8.20.2 segment description).
"""

from __future__ import annotations

import slicer

from spinekit import labels as spine_labels
from spinekit.mrml.resources import CONTEXT_NAME, LEFT, RIGHT

#: Our terminology context (Resources/Terminology, loaded by the extension at start-up with
#: spinekit.mrml.resources.register_terminology) and Slicer's built-in anatomic context (Terminologies module, 5.x).
TERMINOLOGY_CONTEXT = CONTEXT_NAME
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def type_modifier_for(value: int, kind: str) -> spine_labels.Code | None:
    """Laterality modifier of a muscle label (odd = left, even = right); None for the spine map."""
    if kind != "muscles":
        return None
    return LEFT if spine_labels.MUSCLES[value].side == "left" else RIGHT


def terminology_entry(value: int, kind: str = "spine") -> str:
    """Serialized Slicer terminology entry of one label."""
    info = spine_labels.label_info(value, kind)
    modifier = type_modifier_for(value, kind)
    modifier_fields = (modifier.value, modifier.scheme, modifier.meaning) if modifier else ("", "", "")
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT,
        info.category.value, info.category.scheme, info.category.meaning,
        info.code.value, info.code.scheme, info.code.meaning,
        *modifier_fields,
        ANATOMIC_CONTEXT, "", "", "", "", "", "",
    )  # fmt: skip


def parse_terminology_entry(entry: str) -> tuple[str, str, str]:
    """(type scheme, type code value, type-modifier code value) of a serialized entry; empty strings if absent."""
    parsed = slicer.vtkSlicerTerminologyEntry()
    if not entry or not slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(entry, parsed):
        return ("", "", "")
    type_object = parsed.GetTypeObject()
    modifier = parsed.GetTypeModifierObject()
    return (
        type_object.GetCodingSchemeDesignator() or "",
        type_object.GetCodeValue() or "",
        (modifier.GetCodeValue() or "") if modifier else "",
    )
