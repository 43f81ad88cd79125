"""Segmentation backends behind one interface: ours (default), TotalSegmentator, an nnU-Net v2 model folder.

Every backend returns our label conventions (``spinekit.labels``): spine map with vertebrae 1-28, canal 60, discs
101-128; muscle map 1-10. External tools run as subprocesses (they are optional and never imported), and their
labels are converted with the foundation's import tables (``spinekit.label_import``).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from spinekit import labels as lb
from spinekit.errors import InputError
from spinekit.io import Volume, read_labels, resample_labels_to, write_volume

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None] | None


@dataclass
class SegmentationResult:
    """Output of a backend: our label maps (None when not requested), QC, timings, model versions."""

    spine: Volume | None = None
    muscles: Volume | None = None
    qc: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    model_versions: dict = field(default_factory=dict)


class Backend(Protocol):
    """What ``segment_image`` needs from a backend."""

    name: str

    def segment(
        self, image: Volume, targets: Sequence[str], modality: str, device: str, progress: Progress
    ) -> SegmentationResult: ...


def _run(command: list[str], what: str) -> None:
    log.info("running %s", " ".join(command))
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
        raise InputError(f"{what} failed (exit {completed.returncode}): {' | '.join(tail)}")


class TotalSegmentatorBackend:
    """Runs the ``TotalSegmentator`` CLI (Wasserthal et al. 2023) when the user has it installed with weights."""

    name = "totalsegmentator"

    def __init__(self, executable: str = "TotalSegmentator", fast: bool = False):
        self.executable = executable
        self.fast = fast

    def segment(
        self, image: Volume, targets: Sequence[str], modality: str, device: str, progress: Progress = None
    ) -> SegmentationResult:
        from spinekit.label_import import convert_labels

        exe = shutil.which(self.executable)
        if exe is None:
            raise InputError(
                "TotalSegmentator is not installed: `pip install TotalSegmentator` (and let it download its weights "
                "once), or use --backend spinekit"
            )
        task, source = ("total_mr", "totalsegmentator_mr") if modality == "mr" else ("total", "totalsegmentator")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="spinekit_ts_") as tmp:
            tmp_path = Path(tmp)
            write_volume(image, tmp_path / "image.nii.gz")
            on_device = ["-d", "gpu" if device.startswith("cuda") else "cpu"]
            command = [exe, "-i", str(tmp_path / "image.nii.gz"), "-o", str(tmp_path / "total.nii.gz"), "--ml"]
            command += ["--task", task, *on_device]
            _run(command + (["--fast"] if self.fast else []), "TotalSegmentator")
            total = resample_labels_to(read_labels(tmp_path / "total.nii.gz"), image)
            converted = convert_labels(total, source)
            spine = converted.spine
            if "spine" in targets and source == "totalsegmentator":
                body_cmd = [exe, "-i", str(tmp_path / "image.nii.gz"), "-o", str(tmp_path / "body.nii.gz"), "--ml"]
                try:
                    _run(body_cmd + ["--task", "vertebrae_body", *on_device], "TotalSegmentator vertebrae_body")
                    body = resample_labels_to(read_labels(tmp_path / "body.nii.gz"), image)
                    discs = convert_labels(body, "vertebrae_body", levels_from=total).spine.array
                    merged = spine.array.copy()
                    is_disc = (discs > lb.DISC_OFFSET) & (merged == 0)
                    merged[is_disc] = discs[is_disc]
                    spine = spine.with_array(merged)
                except InputError as exc:
                    converted.notes.append(f"no discs: {exc}")
        return SegmentationResult(
            spine=spine if "spine" in targets else None,
            muscles=converted.muscles if "muscles" in targets else None,
            qc={"flags": [{"flag": "note", "label": None, "detail": n} for n in converted.notes]},
            timings={"totalsegmentator_s": time.perf_counter() - start},
            model_versions={"totalsegmentator": task},
        )


class NnUNetBackend:
    """Runs ``nnUNetv2_predict_from_modelfolder`` (Isensee et al. 2021) on a trained nnU-Net v2 results folder.

    Label names in the folder's ``dataset.json`` are mapped to ours: level names ("L1", "vertebrae_L1", "S1",
    "sacrum"), "disc_L1_L2"-style disc names, "spinal_canal"/"canal", and our muscle names ("psoas_left" ...).
    """

    name = "nnunet"

    def __init__(self, model_folder: str | Path, folds: Sequence[str] = ("0",)):
        self.model_folder = Path(model_folder)
        self.folds = tuple(folds)

    def label_table(self) -> tuple[dict[int, int], dict[int, int]]:
        dataset = json.loads((self.model_folder / "dataset.json").read_text())
        spine, muscles = {}, {}
        for name, value in dataset.get("labels", {}).items():
            key = name.lower().replace("vertebrae_", "").strip()
            if key in ("canal", "spinal_canal"):
                spine[int(value)] = lb.CANAL
            elif key.startswith("disc_") and key.count("_") == 2:
                spine[int(value)] = lb.disc_label(lb.parse_level(key.split("_")[1]))
            elif key in lb.MUSCLE_LABELS:
                muscles[int(value)] = lb.MUSCLE_LABELS[key]
            else:
                try:
                    spine[int(value)] = lb.parse_level(key)
                except Exception:  # names we do not know (organs, background) are dropped
                    continue
        return spine, muscles

    def segment(
        self, image: Volume, targets: Sequence[str], modality: str, device: str, progress: Progress = None
    ) -> SegmentationResult:
        exe = shutil.which("nnUNetv2_predict_from_modelfolder")
        if exe is None:
            raise InputError("nnU-Net v2 is not installed: `pip install nnunetv2`, or use --backend spinekit")
        if not (self.model_folder / "dataset.json").is_file():
            raise InputError(f"{self.model_folder} is not an nnU-Net v2 results folder (no dataset.json)")
        spine_table, muscle_table = self.label_table()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="spinekit_nnunet_") as tmp:
            tmp_path = Path(tmp)
            (tmp_path / "in").mkdir()
            write_volume(image, tmp_path / "in" / "case_0000.nii.gz")
            command = [exe, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(self.model_folder)]
            command += ["-f", *self.folds, "-device", "cuda" if device.startswith("cuda") else "cpu"]
            _run(command, "nnU-Net")
            raw = resample_labels_to(read_labels(tmp_path / "out" / "case.nii.gz"), image)
        array = raw.array.astype(np.int32)
        spine = np.zeros(array.shape, np.int16)
        muscles = np.zeros(array.shape, np.int16)
        for source, ours in spine_table.items():
            spine[array == source] = ours
        for source, ours in muscle_table.items():
            muscles[array == source] = ours
        return SegmentationResult(
            spine=image.with_array(spine) if "spine" in targets else None,
            muscles=image.with_array(muscles) if "muscles" in targets else None,
            timings={"nnunet_s": time.perf_counter() - start},
            model_versions={"nnunet": str(self.model_folder)},
        )


def get_backend(name: str, **options) -> Backend:
    """Backend by name: "spinekit" (default), "totalsegmentator", "nnunet" (needs ``model_folder=``)."""
    if name == "spinekit":
        from spinekit.segment.api import SpinekitBackend

        return SpinekitBackend(**options)
    if name == "totalsegmentator":
        return TotalSegmentatorBackend(**options)
    if name == "nnunet":
        if "model_folder" not in options:
            raise InputError("the nnunet backend needs a results folder: --nnunet-folder DIR")
        return NnUNetBackend(**options)
    raise InputError(f"unknown backend {name!r}; choose spinekit, totalsegmentator or nnunet")
