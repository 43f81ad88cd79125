"""Completion and failure markers of one subject's stage: ``DONE.json`` and ``FAILED.json``.

A stage is complete when ``<subject>/<stage>/DONE.json`` exists and the inputs it records (size, mtime and
BLAKE2b hash of each input file) still match the files on disk. The marker is written last and atomically
(temporary file, then ``os.replace``), so a crash at any moment leaves either no marker (the stage reruns)
or a complete one (the stage is skipped).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

from spinekit import __version__
from spinekit.io import atomic_path

DONE = "DONE.json"
FAILED = "FAILED.json"
#: read files in 4 MiB blocks when hashing.
_HASH_BLOCK = 4 << 20


def file_hash(path: Path) -> str:
    """BLAKE2b-128 of a file, or of every file below a folder (DICOM series), in name order."""
    digest = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def _stat(path: Path) -> tuple[int, int]:
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def file_record(path: Path, with_hash: bool = True) -> dict:
    """What a marker remembers of one file: path, size, mtime and (optionally) hash."""
    size, mtime_ns = _stat(path)
    record = {"path": str(path), "size": size, "mtime_ns": mtime_ns}
    if with_hash:
        record["blake2b"] = file_hash(path)
    return record


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(text: str, path: Path) -> Path:
    """Write text with write-then-rename so readers never see half a file.

    The temporary file from ``mkstemp`` is private (0600); it gets the usual permissions (0666 minus the umask)
    before the rename, so colleagues sharing a cohort folder can read the markers and the report.
    """
    tmp = atomic_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(data: dict, path: Path) -> Path:
    """Write JSON atomically (see :func:`write_text_atomic`)."""
    return write_text_atomic(json.dumps(data, indent=1, default=str), path)


def read_json(path: Path) -> dict | None:
    """The marker's content, or None when it is absent or unreadable (a torn marker counts as absent)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_done(stage_dir: Path, stage: str, subject: str, inputs: list[Path], outputs: list[Path], seconds: float):
    """Write the completion marker, last, after every output is on disk."""
    data = {
        "stage": stage,
        "subject": subject,
        "status": "done",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "spinekit_version": __version__,
        "inputs": [file_record(p) for p in inputs if p.exists()],
        "outputs": [file_record(p, with_hash=False) for p in outputs if p.exists()],
    }
    return write_json_atomic(data, stage_dir / DONE)


def write_failed(stage_dir: Path, stage: str, subject: str, status: str, reason: str, detail: str = "") -> Path:
    """Write the failure marker (``status`` is ``failed`` or ``blocked``)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "stage": stage,
        "subject": subject,
        "status": status,
        "reason": reason,
        "detail": detail,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    return write_json_atomic(data, stage_dir / FAILED)


def is_complete(stage_dir: Path, inputs: list[Path]) -> bool:
    """True when the stage's DONE marker exists and its recorded inputs still match ``inputs`` on disk.

    Size and mtime are compared first; only when they differ is the file hashed again (a copied or
    touched but identical file still counts as unchanged).
    """
    done = read_json(stage_dir / DONE)
    if done is None:
        return False
    recorded = {r["path"]: r for r in done.get("inputs", [])}
    current = {str(p) for p in inputs if p.exists()}
    if set(recorded) != current:
        return False
    for path_str, record in recorded.items():
        path = Path(path_str)
        size, mtime_ns = _stat(path)
        if size == record.get("size") and mtime_ns == record.get("mtime_ns"):
            continue
        if size != record.get("size") or file_hash(path) != record.get("blake2b"):
            return False
    return True
