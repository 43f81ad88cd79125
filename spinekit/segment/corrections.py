"""Saved correction sessions: the training data of the active-learning loop.

A correction folder holds ``image.nii.gz`` (the scan), ``labels.nii.gz`` (the corrected label map on the scan's
grid), ``<task>.nii.gz`` (a hard link to the same file, the name ``spinekit train --add DIR`` looks for) and
``clicks.json`` (task, clicks in LPS mm with sign and time, the format version). ``clicks.json`` is written last,
so a folder with it is complete; every file is written atomically (temporary file, then rename).

The loop is MONAI Label's (Diaz-Pinto et al. 2024, Med Image Anal 95:103207, section 3.3): a reader corrects a
case, the corrected label map joins the training set, and the model is fine-tuned from its current weights
(``spinekit train --task spine --finetune-from spine.pt --add DIR``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinekit.errors import InputError
from spinekit.io import Volume, atomic_path, read_labels, read_volume, write_labels, write_volume
from spinekit.segment.clicks import Click

log = logging.getLogger(__name__)

IMAGE_FILE = "image.nii.gz"
LABELS_FILE = "labels.nii.gz"
CLICKS_FILE = "clicks.json"
FORMAT_VERSION = 1
TASKS = ("spine", "muscles")


@dataclass
class CorrectionRecord:
    """One saved session: image, corrected labels, the clicks that made them and what the labels mean."""

    folder: Path
    image: Volume
    labels: Volume
    clicks: list[Click]
    task: str
    meta: dict = field(default_factory=dict)


def _image_digest(image: Volume) -> str:
    data = np.ascontiguousarray(image.array)
    geometry = np.concatenate([image.spacing, image.origin, image.direction.ravel()]).tobytes()
    return hashlib.sha1(data.tobytes() + geometry).hexdigest()


def _write_json(data: dict, path: Path) -> None:
    tmp = atomic_path(path)
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _link_task_file(labels_path: Path, task_path: Path) -> None:
    """``task_path`` becomes the same file as ``labels_path`` (hard link; a copy where links are not allowed)."""
    tmp = atomic_path(task_path)
    tmp.unlink()
    try:
        try:
            os.link(labels_path, tmp)
        except OSError:
            shutil.copyfile(labels_path, tmp)
        os.replace(tmp, task_path)
    finally:
        tmp.unlink(missing_ok=True)


def save_correction(
    folder: str | os.PathLike,
    image: Volume,
    labels: Volume,
    clicks: Sequence[Click],
    task: str,
    extra: dict | None = None,
) -> Path:
    """Write one session to ``folder`` (created if needed); the image is rewritten only when it changed."""
    if task not in TASKS:
        raise InputError(f"task must be one of {TASKS}, not {task!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = _image_digest(image)
    previous = _read_meta(folder) if (folder / CLICKS_FILE).is_file() else {}
    if previous.get("image_sha1") != digest or not (folder / IMAGE_FILE).is_file():
        write_volume(image, folder / IMAGE_FILE)
    labels_path = write_labels(labels, folder / LABELS_FILE)
    _link_task_file(labels_path, folder / f"{task}.nii.gz")
    meta = {
        "format": FORMAT_VERSION,
        "task": task,
        "saved": time.time(),
        "image_sha1": digest,
        "structures": sorted({int(c.structure) for c in clicks}),
        "clicks": [c.to_json() for c in clicks],
        **(extra or {}),
    }
    _write_json(meta, folder / CLICKS_FILE)
    log.info("saved correction session (%d clicks) to %s", len(clicks), folder)
    return folder


def _read_meta(folder: Path) -> dict:
    path = folder / CLICKS_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{folder} is not a saved correction session: {CLICKS_FILE} is missing") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); the session was not saved completely") from None
    if not isinstance(meta, dict) or int(meta.get("format", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} has an unknown format; update spinekit to read it")
    return meta


def load_correction(folder: str | os.PathLike) -> CorrectionRecord:
    """Read one saved session (labels checked to lie on the image's grid)."""
    folder = Path(folder)
    meta = _read_meta(folder)
    task = meta.get("task")
    if task not in TASKS:
        raise InputError(f"{folder / CLICKS_FILE} names task {task!r}; expected one of {TASKS}")
    image = read_volume(folder / IMAGE_FILE)
    labels = read_labels(folder / LABELS_FILE, image)
    clicks = [Click.from_json(c) for c in meta.get("clicks", [])]
    return CorrectionRecord(folder, image, labels, clicks, task, meta)


def find_corrections(directory: str | os.PathLike, task: str | None = None) -> list[Path]:
    """Folders under ``directory`` (itself included) that hold a complete saved session, optionally of one task."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory} is not a folder of saved correction sessions")
    folders = sorted(p.parent for p in directory.glob(f"**/{CLICKS_FILE}"))
    if task is None:
        return folders
    return [f for f in folders if _read_meta(f).get("task") == task]


class CorrectionDataset(Sequence):
    """Saved sessions under one folder as a lazy sequence of :class:`CorrectionRecord` (read on access).

    Args:
        directory: folder searched recursively for ``clicks.json``.
        task: keep only sessions of this task ("spine" or "muscles"); None keeps all.
    """

    def __init__(self, directory: str | os.PathLike, task: str | None = None):
        if task is not None and task not in TASKS:
            raise InputError(f"task must be one of {TASKS}, not {task!r}")
        self.directory = Path(directory)
        self.task = task
        self.folders = find_corrections(self.directory, task)

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return load_correction(self.folders[index])

    def __iter__(self) -> Iterator[CorrectionRecord]:
        for folder in self.folders:
            yield load_correction(folder)

    def pairs(self) -> list[tuple[Volume, Volume]]:
        """``(image, labels)`` of every session, in folder order."""
        return [(record.image, record.labels) for record in self]


def load_corrections(directory: str | os.PathLike, task: str | None = None) -> list[tuple[Volume, Volume]]:
    """Training pairs ``(image, labels)`` from every saved session under ``directory``.

    Raises:
        InputError: ``directory`` is missing or holds no saved session (of ``task``).
    """
    dataset = CorrectionDataset(directory, task)
    if not len(dataset):
        which = f" of task {task!r}" if task else ""
        raise InputError(f"no saved correction sessions{which} under {directory} (folders with {CLICKS_FILE})")
    return dataset.pairs()
