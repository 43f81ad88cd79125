"""Static checks of the Slicer modules (no GUI here) and of their Qt-free process/dependency helpers.

Each check is a function over file texts so that a negative test can show it fails on a broken module.
"""

from __future__ import annotations

import ast
import py_compile
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from spinekit.errors import InputError
from spinekit.io import Volume
from spinekit.mrml.dependencies import ensure_dependencies, missing_requirements
from spinekit.mrml.process import (
    ProcessCancelledError,
    SpinekitProcessError,
    SubprocessRunner,
    parse_progress,
    run_spinekit,
    spinekit_command,
)

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("SpineSegment", "SpineRegister", "SpineBiomech")
#: Widget classes a module .ui may use: Qt widgets, and the CTK/MRML/Slicer widgets Slicer's designer plugins provide.
ALLOWED_CLASSES = {
    "QWidget", "QLabel", "QPushButton", "QCheckBox", "QComboBox", "QSpinBox", "QDoubleSpinBox", "QLineEdit",
    "QProgressBar", "QGroupBox", "QTableView", "QFrame", "QRadioButton", "QToolButton", "QTextEdit",
    "qMRMLWidget", "qSlicerWidget", "qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "qSlicerMarkupsPlaceWidget",
    "qMRMLSegmentsTableView", "qMRMLTableView", "ctkCollapsibleButton", "ctkPathLineEdit", "ctkSliderWidget",
    "ctkRangeWidget", "ctkCheckableComboBox",
}  # fmt: skip


def ui_widgets(ui_text: str) -> dict[str, str]:
    """name -> class of every widget in a Qt Designer file (raises ParseError on invalid XML)."""
    root = ET.fromstring(ui_text)
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def ui_parameter_names(ui_text: str) -> set[str]:
    """Values of the SlicerParameterName dynamic property (parameter-node bindings)."""
    root = ET.fromstring(ui_text)
    return {p.findtext("string") for p in root.iter("property") if p.get("name") == "SlicerParameterName"}


def used_ui_names(py_text: str) -> set[str]:
    return set(re.findall(r"self\.ui\.(\w+)", py_text))


def parameter_node_fields(py_text: str, module: str) -> set[str]:
    """Annotated fields of the ``@parameterNodeWrapper`` class ``<module>ParameterNode``."""
    for node in ast.walk(ast.parse(py_text)):
        if isinstance(node, ast.ClassDef) and node.name == f"{module}ParameterNode":
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    return set()


def check_module(module: str, py_text: str, ui_text: str, cmake_text: str) -> list[str]:
    """Problems found in one module's .py/.ui/CMakeLists (empty list = fine)."""
    problems = []
    widgets = ui_widgets(ui_text)
    for name in sorted(used_ui_names(py_text) - set(widgets)):
        problems.append(f"{module}.py uses self.ui.{name}, which is not a widget in {module}.ui")
    for name, cls in sorted(widgets.items()):
        if cls not in ALLOWED_CLASSES:
            problems.append(f"{module}.ui widget {name} has unknown class {cls}")
    fields = parameter_node_fields(py_text, module)
    if not fields:
        problems.append(f"{module}.py has no @parameterNodeWrapper class {module}ParameterNode")
    for name in sorted(ui_parameter_names(ui_text) - fields):
        problems.append(f"{module}.ui binds SlicerParameterName {name!r}, not a field of {module}ParameterNode")
    tree = ast.parse(py_text)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    for suffix in ("", "Widget", "Logic", "Test"):
        if f"{module}{suffix}" not in classes:
            problems.append(f"{module}.py lacks class {module}{suffix}")
    if not re.search(rf"set\(MODULE_NAME {module}\)", cmake_text):
        problems.append(f"{module}/CMakeLists.txt does not set MODULE_NAME {module}")
    for entry in ("${MODULE_NAME}.py", "Resources/UI/${MODULE_NAME}.ui", "Resources/Icons/${MODULE_NAME}.png"):
        if entry not in cmake_text:
            problems.append(f"{module}/CMakeLists.txt does not list {entry}")
    if "slicerMacroBuildScriptedModule" not in cmake_text:
        problems.append(f"{module}/CMakeLists.txt does not call slicerMacroBuildScriptedModule")
    return problems


def _texts(module: str) -> tuple[str, str, str]:
    folder = ROOT / module
    return (
        (folder / f"{module}.py").read_text(),
        (folder / "Resources" / "UI" / f"{module}.ui").read_text(),
        (folder / "CMakeLists.txt").read_text(),
    )


@pytest.mark.parametrize("module", MODULES)
def test_module_files_consistent(module):
    assert check_module(module, *_texts(module)) == []


@pytest.mark.parametrize("module", MODULES)
def test_module_compiles_and_is_small(module, tmp_path):
    path = ROOT / module / f"{module}.py"
    py_compile.compile(str(path), cfile=str(tmp_path / f"{module}.pyc"), doraise=True)
    assert len(path.read_text().splitlines()) < 400
    icon = ROOT / module / "Resources" / "Icons" / f"{module}.png"
    assert icon.is_file() and icon.stat().st_size < 50_000
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_extension_cmakelists():
    text = (ROOT / "CMakeLists.txt").read_text()
    for module in MODULES:
        assert f"add_subdirectory({module})" in text
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert re.search(r'set\(EXTENSION_CATEGORY "Quantification"\)', text)
    assert "spinekit/*.py" in text  # the core package is installed beside the modules
    icon = ROOT / "SpineBiomech.png"
    assert icon.stat().st_size < 50_000 and icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checker_catches_broken_modules():
    """Negative tests: each kind of breakage is reported."""
    py_text, ui_text, cmake_text = _texts("SpineSegment")
    broken_py = py_text + "\n\ndef extra(self):\n    self.ui.missingWidget.enabled = False\n"
    assert any("self.ui.missingWidget" in p for p in check_module("SpineSegment", broken_py, ui_text, cmake_text))
    broken_ui = ui_text.replace('class="QCheckBox" name="musclesCheckBox"', 'class="QFancyBox" name="musclesCheckBox"')
    assert any("QFancyBox" in p for p in check_module("SpineSegment", py_text, broken_ui, cmake_text))
    unbound = py_text.replace("    segmentMuscles: bool = False\n", "")
    assert any("segmentMuscles" in p for p in check_module("SpineSegment", unbound, ui_text, cmake_text))
    no_ui = cmake_text.replace("Resources/UI/${MODULE_NAME}.ui", "")
    assert any(".ui" in p for p in check_module("SpineSegment", py_text, ui_text, no_ui))
    no_test = py_text.replace("class SpineSegmentTest(", "class Something(")
    assert any("SpineSegmentTest" in p for p in check_module("SpineSegment", no_test, ui_text, cmake_text))
    with pytest.raises(ET.ParseError):
        ui_widgets(ui_text.replace("</ui>", ""))


def test_selftest_runner_names_every_module(tmp_path):
    path = ROOT / "Testing" / "Slicer" / "run_selftests.py"
    text = path.read_text()
    py_compile.compile(str(path), cfile=str(tmp_path / "run_selftests.pyc"), doraise=True)
    for module in MODULES:
        assert f'"{module}"' in text


# --- process helpers -------------------------------------------------------------------------------------------


def test_parse_progress_tqdm_and_plain():
    assert parse_progress("segment:  45%|####5     | 9/20 [00:01<00:02,  4.50it/s]") == (0.45, "segment")
    assert parse_progress(" 50%|#####     | 1/2 [00:01<00:01]") == (0.5, "")
    assert parse_progress("progress 0.25 registering L4") == (0.25, "registering L4")
    assert parse_progress("INFO loaded model") is None


def test_parse_progress_reads_the_stages_tqdm_bars():
    """Lines as ``spinekit measure``/``register``/``biomech`` print them (tqdm, unit "%", step in the postfix)."""
    assert parse_progress("measure:  30%|███       | 30/100 [00:01<00:03, 22.43%/s, discs]  ") == (
        0.3,
        "measure: discs",
    )
    assert parse_progress("register:   0%|          | 0/100 [00:00<?, ?%/s]") == (0.0, "register")
    line = "biomech:  50%|█████     | 50/100 [00:05<00:05,  9.91%/s, solving lift20_close]"
    assert parse_progress(line) == (0.5, "biomech: solving lift20_close")
    assert parse_progress("segment: 100%|██████████| 100/100 [00:09<00:00, 10.1%/s, done]") == (1.0, "segment: done")


def test_subprocess_runner_reads_a_real_stage(tmp_path):
    """A real ``spinekit measure`` child: its tqdm progress arrives through the runner, its files appear."""
    pytest.importorskip("skimage")
    from spinekit.io import write_labels
    from spinekit.mrml.commands import measure_arguments

    labels = np.zeros((30, 20, 20), np.int16)
    labels[3:11, 5:15, 5:15], labels[11:14, 5:15, 5:15], labels[14:22, 5:15, 5:15] = 22, 122, 23
    spine = write_labels(Volume(labels, (1.5, 1.5, 2.0)), tmp_path / "spine.nii.gz")
    command = spinekit_command("measure", [*measure_arguments(spine, tmp_path / "out"), "--no-figure"], sys.executable)
    updates = []
    run_spinekit(command, SubprocessRunner(), lambda f, m: updates.append((f, m)))
    assert updates[-1][0] == 1.0 and all(m.startswith("measure") for _, m in updates)
    assert (tmp_path / "out" / "metrics.csv").is_file()


def test_stage_arguments_parse_with_the_real_parsers(tmp_path):
    """Every command the modules build is accepted by the stage's own argparse parser, with the meant values."""
    from spinekit.mrml import commands as c

    def parse(subcommand, arguments):
        return c.parse_stage_arguments(spinekit_command(subcommand, arguments, python="py"))

    _, args = parse(
        "segment", c.segment_arguments(tmp_path / "i.nii.gz", tmp_path / "o", True, True, "MRI", "spinekit")
    )
    assert (args.image, args.out, args.targets, args.modality, args.device) == (
        tmp_path / "i.nii.gz", tmp_path / "o", "spine,muscles", "mr", "cpu"
    )  # fmt: skip
    _, args = parse("measure", c.measure_arguments(Path("s"), Path("o"), Path("i"), Path("m"), Path("f"), Path("w")))
    assert (args.spine, args.image, args.muscles, args.fat, args.water, args.out) == tuple(map(Path, "simfwo"))
    _, args = parse("register", c.register_arguments(Path("b"), Path("bs"), Path("f"), Path("o"), Path("fs")))
    assert (args.baseline, args.baseline_spine, args.followup, args.followup_spine) == tuple(
        map(Path, ("b", "bs", "f", "fs"))
    )
    _, args = parse("register", c.register_arguments(Path("b"), Path("bs"), Path("f"), Path("o")))
    assert args.followup_spine is None
    arguments = c.biomech_arguments(
        Path("s"), Path("o"), "male", 61, 180.5, 80, Path("m"), Path("i"), ["standing"], "x.osim"
    )
    _, args = parse("biomech", arguments)
    assert (args.sex, args.age, args.height_cm, args.weight_kg, args.tasks) == ("male", 61.0, 180.5, 80.0, ["standing"])
    assert (args.muscles, args.image, args.base_model) == (Path("m"), Path("i"), Path("x.osim"))
    _, args = parse("biomech", c.biomech_arguments(Path("s"), Path("o"), "female", 60, 165, 60, tasks=["all"]))
    assert args.tasks is None and args.base_model is None  # "all" = every built-in task


def test_parse_stage_arguments_rejects_drifted_flags():
    """Negative tests: the flags the previous module code guessed are refused by the real parsers."""
    from spinekit.mrml.commands import parse_stage_arguments, resolve_device, segment_arguments

    with pytest.raises(InputError, match="output-dir"):
        parse_stage_arguments(spinekit_command("segment", ["img", "--out", "o", "--output-dir", "o"], python="py"))
    with pytest.raises(InputError):
        parse_stage_arguments(spinekit_command("measure", ["--labels", "s", "--out", "o"], python="py"))
    with pytest.raises(InputError):
        parse_stage_arguments(spinekit_command("register", ["--baseline-image", "b", "--out", "o"], python="py"))
    with pytest.raises(InputError):
        parse_stage_arguments(["py", "-c", "print()"])
    with pytest.raises(InputError):
        segment_arguments(Path("i"), Path("o"), spine=False, muscles=False)
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(InputError):
        resolve_device("tpu")


def test_segment_qc_flags(tmp_path):
    import json

    from spinekit.mrml.commands import segment_qc_flags

    flags = [{"flag": "missing_levels", "label": None, "detail": "L5"}, {"flag": "fragmented_label", "label": 23,
             "detail": "second component over 10% of the label"}]  # fmt: skip
    ribs = {"T11": ["left", "right"], "T12": ["right"]}
    (tmp_path / "segment.json").write_text(json.dumps({"qc": {"flags": flags, "ribs": ribs}, "timings_s": {}}))
    assert segment_qc_flags(tmp_path) == [
        "missing_levels: L5",
        "fragmented_label (label 23): second component over 10% of the label",
        "ribs on T11 (left and right), T12 (right)",
    ]
    assert "unknown" in segment_qc_flags(tmp_path / "nothing")[0]


def test_spinekit_command():
    command = spinekit_command("segment", ["--input", Path("/x/image.nii.gz")], python="/opt/PythonSlicer")
    assert command == ["/opt/PythonSlicer", "-m", "spinekit", "segment", "--input", "/x/image.nii.gz"]
    with pytest.raises(InputError):
        spinekit_command("--help")


_CHILD = (
    "import sys, time\n"
    "for i in range(1, 5):\n"
    "    print(f'work: {25 * i}%|##| {i}/4 [00:00<00:00]', file=sys.stderr, flush=True)\n"
    "print('done'); sys.exit(int(sys.argv[1]))\n"
)


def test_subprocess_runner_reports_progress_and_exit_code():
    fractions = []
    lines = run_spinekit([sys.executable, "-c", _CHILD, "0"], SubprocessRunner(), lambda f, m: fractions.append(f))
    assert fractions == [0.25, 0.5, 0.75, 1.0]
    assert lines == ["done"]
    with pytest.raises(SpinekitProcessError, match="exit code 3"):
        run_spinekit([sys.executable, "-c", _CHILD, "3"], SubprocessRunner())


def test_subprocess_runner_cancels():
    child = "import time\nprint('started', flush=True)\ntime.sleep(30)\n"
    seen = []
    with pytest.raises(ProcessCancelledError):
        run_spinekit(
            [sys.executable, "-c", child], SubprocessRunner(), should_cancel=lambda: bool(seen) or seen.append(1)
        )


def test_ensure_dependencies_asks_first():
    asked, installed = [], []
    assert missing_requirements(["core"]) == []  # the dev environment has them
    assert ensure_dependencies(["core"], lambda m: asked.append(m) or True, installed.extend)
    assert asked == [] and installed == []
    with pytest.raises(InputError):
        missing_requirements(["nonsense"])
    from spinekit.mrml import dependencies

    original = dict(dependencies.REQUIREMENTS)
    dependencies.REQUIREMENTS["fake"] = {"surely-not-installed-pkg>=1": "nothing"}
    try:
        assert not ensure_dependencies(["fake"], lambda m: asked.append(m) or False, installed.extend)
        assert "surely-not-installed-pkg" in asked[0] and installed == []
        assert ensure_dependencies(["fake"], lambda m: True, installed.extend)
        assert installed == ["surely-not-installed-pkg>=1"]
    finally:
        dependencies.REQUIREMENTS.clear()
        dependencies.REQUIREMENTS.update(original)


# --- module logic on slicer-core, with the Qt-side Slicer API stubbed -------------------------------------------


@pytest.fixture()
def slicer_app_stub(monkeypatch):
    """Just enough of the application API (i18n, parameter wrapper, module bases, mrmlScene) to import a module."""
    import types
    import unittest

    slicer = pytest.importorskip("slicer")
    from spinekit.mrml import new_scene

    def passthrough(*args, **kwargs):
        return args[0] if args and callable(args[0]) else (lambda cls: cls)

    stubs = {
        "qt": types.ModuleType("qt"),
        "slicer.i18n": types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text),
        "slicer.parameterNodeWrapper": types.SimpleNamespace(
            parameterNodeWrapper=passthrough, Choice=lambda *a: None, WithinRange=lambda *a: None
        ),
        "slicer.ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModule=type("Module", (), {}),
            ScriptedLoadableModuleWidget=type("Widget", (), {}),
            ScriptedLoadableModuleLogic=type("Logic", (), {"__init__": lambda self: None}),
            ScriptedLoadableModuleTest=type("Test", (unittest.TestCase,), {"delayDisplay": lambda self, m: None}),
        ),
    }
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(slicer, "mrmlScene", new_scene(), raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=lambda: None), raising=False)
    return slicer


@pytest.mark.parametrize("module", MODULES)
def test_module_logic_self_test_on_slicer_core(module, slicer_app_stub, monkeypatch):
    """Runs each module's own self-test (fake process runner, real MRML scene) outside the application."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / module))
    sys.modules.pop(module, None)
    loaded = importlib.import_module(module)
    test = getattr(loaded, f"{module}Test")()
    test.runTest()
