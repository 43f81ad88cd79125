"""Extension-wide resources generated from :mod:`spinekit.labels`: colour tables and a terminology context.

* ``Resources/ColorTables/SpineBiomech-spine.csv`` and ``...-muscles.csv``: Slicer's colour table CSV format
  (Slicer documentation, developer guide, "Colors: Color table CSV file format"): columns ``LabelValue, Name,
  Color_R/G/B/A`` (0-255) and the terminology of each entry as ``Category_``/``Type_``/``TypeModifier_``/
  ``Region_``/``RegionModifier_`` + ``CodingScheme, CodeValue, CodeMeaning``, strings quoted, no quotation marks
  inside values; label 0 (background) left out, as the format recommends.
* ``Resources/Terminology/SegmentationCategoryTypeModifier-SpineBiomech.term.json``: a terminology context in the
  schema of Slicer's own lists (``SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json``; dcmqi
  ``segment-context-schema.json``): categories holding types, types holding laterality modifiers.

The committed files are these functions' output; ``Testing/test_mrml_resources.py`` fails when they differ,
so they cannot drift from ``spinekit.labels``. Regenerate with ``python -m spinekit.mrml.resources``.
No ``slicer`` import: the text is produced from the label tables alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spinekit import labels as spine_labels

#: Root of the extension's resources (beside the module folders).
RESOURCES = Path(__file__).resolve().parents[2] / "Resources"
#: Name of our terminology context as Slicer lists it.
CONTEXT_NAME = "SpineBiomech spine and paraspinal muscles"
#: Schema of segmentation terminology contexts (dcmqi), as Slicer's own context files reference it.
CONTEXT_SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#"
#: Laterality modifiers, SNOMED-CT (DICOM CID 244 "Laterality").
LEFT = spine_labels.Code("SCT", "7771000", "Left")
RIGHT = spine_labels.Code("SCT", "24028007", "Right")

_CSV_COLUMNS = ["LabelValue", "Name", "Color_R", "Color_G", "Color_B", "Color_A"] + [
    f"{part}_{field}"
    for part in ("Category", "Type", "TypeModifier", "Region", "RegionModifier")
    for field in ("CodingScheme", "CodeValue", "CodeMeaning")
]


def label_values(kind: str) -> list[int]:
    """Every label of ``kind`` ("spine": vertebrae, canal, cord, discs; "muscles"), in ascending order."""
    if kind == "spine":
        below = (spine_labels.DISC_OFFSET + v for v in spine_labels.VERTEBRA_NAMES)
        discs = [d for d in below if spine_labels.is_disc(d)]
        return sorted([*spine_labels.VERTEBRA_NAMES, spine_labels.CANAL, spine_labels.CORD, *discs])
    if kind == "muscles":
        return sorted(spine_labels.MUSCLES)
    raise ValueError(f"kind must be 'spine' or 'muscles', not {kind!r}")


def _modifier(value: int, kind: str) -> spine_labels.Code | None:
    if kind != "muscles":
        return None
    return LEFT if spine_labels.MUSCLES[value].side == "left" else RIGHT


def _quoted(text: str) -> str:
    if '"' in text:
        raise ValueError(f"colour table values cannot contain quotation marks: {text!r}")
    return f'"{text}"'


def color_table_csv(kind: str) -> str:
    """Slicer colour table (CSV with terminology columns) of every ``kind`` label."""
    lines = [",".join(_quoted(c) for c in _CSV_COLUMNS)]
    for value in label_values(kind):
        info = spine_labels.label_info(value, kind)
        modifier = _modifier(value, kind)
        codes = [info.category, info.code, modifier, None, None]
        fields = [str(value), _quoted(info.name), *(str(c) for c in info.color), "255"]
        for code in codes:
            triple = (code.scheme, code.value, code.meaning) if code else ("", "", "")
            fields += [_quoted(t) for t in triple]
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def _code(code: spine_labels.Code) -> dict:
    return {"CodingSchemeDesignator": code.scheme, "CodeValue": code.value, "CodeMeaning": code.meaning}


def terminology_context() -> dict:
    """Our labels as a Slicer "SegmentationCategoryTypeModifier" context (one type per distinct code).

    Labels that share a code (L6 and T13 take the generic vertebra code, erector spinae and autochthon share
    one) appear once, under the first label's name and colour; muscles list their left/right modifiers.
    """
    categories: dict[tuple[str, str], dict] = {}
    for kind in ("spine", "muscles"):
        for value in label_values(kind):
            info = spine_labels.label_info(value, kind)
            key = (info.category.scheme, info.category.value)
            category = categories.setdefault(key, {**_code(info.category), "showAnatomy": False, "Type": []})
            types = {(t["CodingSchemeDesignator"], t["CodeValue"]): t for t in category["Type"]}
            entry = types.get((info.code.scheme, info.code.value))
            modifier = _modifier(value, kind)
            if entry is None:
                entry = {**_code(info.code), "recommendedDisplayRGBValue": list(info.color)}
                if modifier is None:
                    entry["3dSlicerLabel"] = info.name
                category["Type"].append(entry)
            if modifier is not None:
                names = {m["CodeValue"] for m in entry.setdefault("Modifier", [])}
                if modifier.value not in names:
                    entry["Modifier"].append(
                        {**_code(modifier), "recommendedDisplayRGBValue": list(info.color), "3dSlicerLabel": info.name}
                    )
    return {
        "SegmentationCategoryTypeContextName": CONTEXT_NAME,
        "@schema": CONTEXT_SCHEMA,
        "SegmentationCodes": {"Category": list(categories.values())},
    }


def generated_files() -> dict[Path, str]:
    """{path relative to the repository root: content} of every generated resource."""
    return {
        Path("Resources/ColorTables/SpineBiomech-spine.csv"): color_table_csv("spine"),
        Path("Resources/ColorTables/SpineBiomech-muscles.csv"): color_table_csv("muscles"),
        Path("Resources/Terminology/SegmentationCategoryTypeModifier-SpineBiomech.term.json"): json.dumps(
            terminology_context(), indent=2
        )
        + "\n",
    }


def register_terminology(logic, resources: Path | None = None) -> str:
    """Load our terminology context into Slicer's terminologies logic; returns the context name.

    Call once at application start-up (``slicer.modules.terminologies.logic()``), so segments made by spinekit
    (whose entries name this context) show our list in the terminology selector.
    """
    path = Path(resources or RESOURCES) / "Terminology" / "SegmentationCategoryTypeModifier-SpineBiomech.term.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate it with python -m spinekit.mrml.resources")
    name = logic.LoadTerminologyFromFile(str(path))
    if not name:
        raise ValueError(f"Slicer could not load the terminology context {path}")
    return name


def write_resources(root: Path | None = None) -> list[Path]:
    """Write every generated resource under ``root`` (default: this checkout); returns the paths."""
    root = Path(root) if root is not None else RESOURCES.parent
    written = []
    for relative, text in generated_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8", newline="\n")
        tmp.replace(path)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_resources(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(written_path)
