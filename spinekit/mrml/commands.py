"""Command lines of the ``spinekit`` stages as the Slicer modules run them, and readers of what they write.

No Qt and no ``slicer`` import. The argument lists follow each stage's ``add_arguments`` exactly
(``spinekit/segment/cli.py``, ``morphometry/cli.py``, ``register/cli.py``, ``biomech/cli.py``);
:func:`parse_stage_arguments` parses a command with the stage's own parser, so tests (and the modules'
fake runners) fail as soon as a flag drifts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from spinekit.errors import InputError

logger = logging.getLogger(__name__)

#: Values of the SpineSegment "modality" choice -> ``spinekit segment --modality``.
SEGMENT_MODALITIES = {"auto": "auto", "CT": "ct", "MRI": "mr", "ct": "ct", "mr": "mr"}


def stage_parser(subcommand: str) -> argparse.ArgumentParser:
    """The parser ``spinekit <subcommand>`` uses (built the way :func:`spinekit.cli.main` builds it)."""
    from spinekit.cli import COMMANDS

    if subcommand not in COMMANDS:
        raise InputError(f"unknown spinekit subcommand {subcommand!r}; known: {sorted(COMMANDS)}")
    module = importlib.import_module(COMMANDS[subcommand][0])
    parser = argparse.ArgumentParser(prog=f"spinekit {subcommand}", exit_on_error=False)
    parser.add_argument("-v", "--verbose", action="store_true")
    module.add_arguments(parser)
    return parser


def parse_stage_arguments(command: Sequence[str]) -> tuple[str, argparse.Namespace]:
    """(subcommand, parsed arguments) of ``[python, -m, spinekit, subcommand, *arguments]``.

    Raises:
        InputError: the command is not a spinekit command or its stage's parser rejects an argument.
    """
    command = [str(c) for c in command]
    if len(command) < 4 or command[1:3] != ["-m", "spinekit"]:
        raise InputError(f"not a 'python -m spinekit' command: {command[:4]}")
    subcommand, arguments = command[3], command[4:]
    parser = stage_parser(subcommand)
    try:
        namespace, unknown = parser.parse_known_args(arguments)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise InputError(f"spinekit {subcommand} rejects {arguments}: {exc}") from None
    if unknown:
        raise InputError(f"spinekit {subcommand} does not know the arguments {unknown}")
    return subcommand, namespace


def resolve_device(device: str) -> str:
    """ "cpu" or "cuda"; "auto" picks cuda when torch sees a GPU (``spinekit segment --device`` takes no "auto")."""
    if device in ("cpu", "cuda"):
        return device
    if device != "auto":
        raise InputError(f"device must be auto, cpu or cuda, not {device!r}")
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def segment_arguments(
    image: Path,
    out: Path,
    spine: bool = True,
    muscles: bool = False,
    modality: str = "auto",
    backend: str = "spinekit",
    device: str = "cpu",
) -> list[str]:
    """Arguments of ``spinekit segment IMAGE --out DIR --targets ... --modality ... --backend ... --device ...``."""
    targets = [t for t, on in (("spine", spine), ("muscles", muscles)) if on]
    if not targets:
        raise InputError("choose at least one target: spine or muscles")
    if modality not in SEGMENT_MODALITIES:
        raise InputError(f"modality must be one of {sorted(SEGMENT_MODALITIES)}, not {modality!r}")
    return [
        str(image), "--out", str(out), "--targets", ",".join(targets), "--modality", SEGMENT_MODALITIES[modality],
        "--backend", backend, "--device", resolve_device(device),
    ]  # fmt: skip


def segment_qc_flags(out: Path) -> list[str]:
    """QC flags of ``out/segment.json`` (``{"qc": {"flags": [{"flag", "label", "detail"}]}}``) as text lines, then
    the rib-bearing vertebrae found on CT (``qc["ribs"]``: name -> sides), which say whether the count was checked."""
    path = Path(out) / "segment.json"
    if not path.is_file():
        return [f"no segment.json in {out}: quality flags unknown"]
    report = json.loads(path.read_text())
    lines = []
    for item in report.get("qc", {}).get("flags", []):
        label = f" (label {item['label']})" if item.get("label") not in (None, "") else ""
        lines.append(f"{item.get('flag', '?')}{label}: {item.get('detail', '')}".rstrip(": "))
    ribs = report.get("qc", {}).get("ribs")
    if ribs:
        lines.append("ribs on " + ", ".join(f"{name} ({' and '.join(sides)})" for name, sides in ribs.items()))
    return lines


def measure_arguments(
    spine: Path,
    out: Path,
    image: Path | None = None,
    muscles: Path | None = None,
    fat: Path | None = None,
    water: Path | None = None,
    subject: str = "",
) -> list[str]:
    """Arguments of ``spinekit measure --spine SEG [--image IMG] [--muscles M] [--fat F --water W] --out DIR``."""
    if (fat is None) != (water is None):
        raise InputError("pass both the Dixon fat and water images, or neither")
    arguments = ["--spine", str(spine)]
    for flag, path in (("--image", image), ("--muscles", muscles), ("--fat", fat), ("--water", water)):
        if path is not None:
            arguments += [flag, str(path)]
    if subject:
        arguments += ["--subject", subject]
    return arguments + ["--out", str(out)]


def register_arguments(
    baseline: Path, baseline_spine: Path, followup: Path, out: Path, followup_spine: Path | None = None
) -> list[str]:
    """Arguments of ``spinekit register --baseline IMG --baseline-spine SEG --followup IMG [--followup-spine SEG]``."""
    arguments = ["--baseline", str(baseline), "--baseline-spine", str(baseline_spine), "--followup", str(followup)]
    if followup_spine is not None:
        arguments += ["--followup-spine", str(followup_spine)]
    return arguments + ["--out", str(out)]


def biomech_arguments(
    spine: Path,
    out: Path,
    sex: str,
    age: float,
    height_cm: float,
    weight_kg: float,
    muscles: Path | None = None,
    image: Path | None = None,
    tasks: Sequence[str] = (),
    base_model: Path | str | None = None,
) -> list[str]:
    """Arguments of ``spinekit biomech --spine SEG [--muscles M] [--image CT] --sex --age --height-cm --weight-kg``.

    ``tasks`` empty (or ``["all"]``) runs every built-in task; ``base_model`` "" or None builds the model.
    """
    if sex not in ("male", "female"):
        raise InputError(f"sex must be 'male' or 'female', not {sex!r}")
    arguments = ["--spine", str(spine)]
    for flag, path in (("--muscles", muscles), ("--image", image)):
        if path is not None:
            arguments += [flag, str(path)]
    arguments += ["--sex", sex, "--age", f"{float(age):g}", "--height-cm", f"{float(height_cm):g}"]
    arguments += ["--weight-kg", f"{float(weight_kg):g}"]
    chosen = [t for t in tasks if t and t != "all"]
    if chosen:
        arguments += ["--tasks", *chosen]
    if base_model:
        arguments += ["--base-model", str(base_model)]
    return arguments + ["--out", str(out)]


def read_tidy_csv(path: Path):
    """A tidy table (``spinekit.tables`` columns) with empty ``reason`` cells as "" rather than NaN."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} was not written; see the stage's output above")
    frame = pd.read_csv(path, dtype={"reason": str, "subject": str, "structure": str})
    for column in ("reason", "subject"):
        if column in frame.columns:
            frame[column] = frame[column].fillna("")
    return frame
