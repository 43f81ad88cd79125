"""Extension resources: the committed colour tables and terminology equal what spinekit.labels generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinekit import labels as spine_labels
from spinekit.mrml.resources import color_table_csv, generated_files, terminology_context, write_resources

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("relative", sorted(generated_files(), key=str))
def test_committed_resource_equals_generated(relative):
    path = ROOT / relative
    assert path.is_file(), f"{relative} is missing; run python -m spinekit.mrml.resources"
    assert path.read_text(encoding="utf-8") == generated_files()[relative], (
        f"{relative} differs from spinekit.labels; regenerate it with python -m spinekit.mrml.resources"
    )


def test_generator_notices_a_label_change(monkeypatch, tmp_path):
    """Negative test: change one colour in spinekit.labels and the committed file no longer matches."""
    original = color_table_csv("muscles")
    monkeypatch.setitem(spine_labels._MUSCLE_COLORS, "psoas", (1, 2, 3))
    monkeypatch.setattr(spine_labels, "MUSCLES", spine_labels._build_muscles())
    changed = color_table_csv("muscles")
    assert changed != original and '1,"psoas_left",1,2,3,255' in changed
    written = write_resources(tmp_path)
    assert len(written) == 3 and all(p.is_file() for p in written)


def test_colour_table_rows_follow_labels():
    lines = color_table_csv("spine").splitlines()
    assert lines[0].startswith('"LabelValue","Name","Color_R","Color_G","Color_B","Color_A","Category_CodingScheme"')
    rows = {int(line.split(",")[0]): line for line in lines[1:]}
    assert 0 not in rows and {23, 60, 61, 123, 26} <= set(rows)
    assert 126 not in rows  # no disc below the sacrum
    expected = '123,"disc L4/L5",90,200,255,255,"SCT","123037004","Anatomical Structure","SCT","243923001"'
    assert rows[123].startswith(expected)
    muscles = color_table_csv("muscles").splitlines()
    assert len(muscles) == 1 + len(spine_labels.MUSCLES)
    assert '"SCT","71915005","Psoas major muscle","SCT","7771000","Left"' in muscles[1]


def test_terminology_context_structure():
    context = terminology_context()
    assert context["SegmentationCategoryTypeContextName"]
    categories = context["SegmentationCodes"]["Category"]
    assert [c["CodeMeaning"] for c in categories] == ["Anatomical Structure", "Tissue"]
    types = {t["CodeValue"]: t for c in categories for t in c["Type"]}
    assert types["49668003"]["3dSlicerLabel"] == "L5"
    psoas = types["71915005"]
    assert [m["CodeMeaning"] for m in psoas["Modifier"]] == ["Left", "Right"]
    assert psoas["Modifier"][0]["3dSlicerLabel"] == "psoas_left"
    # One type per code: L6 and T13 share the generic vertebra code, erector spinae and autochthon theirs.
    codes = [t["CodeValue"] for c in categories for t in c["Type"]]
    assert len(codes) == len(set(codes))
    assert json.loads(json.dumps(context)) == context


def test_slicer_reads_the_resources():
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    from spinekit.mrml import new_scene

    scene = new_scene()
    for kind, value, name in (("spine", 123, "disc L4/L5"), ("muscles", 2, "psoas_right")):
        node = slicer.vtkMRMLColorTableNode()
        scene.AddNode(node)
        storage = slicer.vtkMRMLColorTableStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(ROOT / "Resources" / "ColorTables" / f"SpineBiomech-{kind}.csv"))
        assert storage.ReadData(node)
        assert node.GetColorName(value) == name
        info = spine_labels.label_info(value, kind)
        assert f"SCT^{info.code.value}^{info.code.meaning}" in node.GetTerminologyAsString(value)
    from spinekit.mrml.resources import register_terminology
    from spinekit.mrml.terminology import terminology_entry

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    context = register_terminology(logic)
    assert context == terminology_context()["SegmentationCategoryTypeContextName"]
    assert logic.GetNumberOfCategoriesInTerminology(context) == 2
    assert terminology_entry(23).startswith(context + "~SCT^123037004^Anatomical Structure~SCT^11994002^L4 vertebra")
    with pytest.raises(FileNotFoundError):
        register_terminology(logic, ROOT / "nowhere")
