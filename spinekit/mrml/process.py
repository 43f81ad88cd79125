"""Run ``spinekit`` commands out of process for the Slicer modules: command lines, progress, cancel.

No Qt and no ``slicer`` import: the modules inject a :class:`ProcessRunner` (the default one here uses
``subprocess``; tests pass a fake), following SlicerNNUnet (KitwareMedical) where the logic receives its
process runner through a protocol. Inside Slicer the ``on_line`` callback also pumps the event loop
(``slicer.app.processEvents()``), as SlicerTotalSegmentator's ``logProcessOutput`` does, so the
application stays responsive while the child works.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from spinekit.errors import InputError, SpinekitError

logger = logging.getLogger(__name__)

#: tqdm's default bar: "desc:  45%|####5     | 9/20 [00:01<00:02, 4.5it/s, postfix]" (tqdm documentation,
#: ``format_meter``: ``{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]``). The
#: spinekit stages print their step ("registering L4") as the postfix.
_TQDM = re.compile(
    r"^(?:(?P<desc>.*?):\s*)?(?P<pct>\d{1,3})%\|.*?\|\s*(?P<n>\d+)/(?P<total>\d+)"
    r"(?:\s*\[[^,\]]*,\s*[^,\]]*(?:,\s*(?P<postfix>[^\]]*))?\])?"
)
#: Plain progress lines a stage may print: "progress 0.45 registering L4".
_PLAIN = re.compile(r"^progress[:\s]+(?P<fraction>[0-9.]+)\s*(?P<message>.*)$", re.IGNORECASE)


class SpinekitProcessError(SpinekitError):
    """A ``spinekit`` child process failed; the message carries the tail of its output."""


class ProcessCancelledError(SpinekitError):
    """The user cancelled a running ``spinekit`` process."""


class ProcessRunner(Protocol):
    """Runs a command, reporting each output line, and stops it when ``should_cancel()`` turns true."""

    def run(self, command: Sequence[str], on_line: Callable[[str], None], should_cancel: Callable[[], bool]) -> int:
        """Return the exit code (negative when cancelled)."""
        ...


class SubprocessRunner:
    """:class:`ProcessRunner` on ``subprocess.Popen`` (stdout and stderr merged, line by line)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env

    def run(self, command: Sequence[str], on_line: Callable[[str], None], should_cancel: Callable[[], bool]) -> int:
        # UTF-8 both ways: tqdm draws its bar with block characters, which a Windows code page cannot decode.
        env = dict(os.environ, **(self.env or {}), PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=env,
        )
        assert process.stdout is not None
        # tqdm rewrites its line with "\r": split on both so each update arrives as a line.
        buffer = ""
        while True:
            chunk = process.stdout.read(1)
            if chunk == "" and process.poll() is not None:
                break
            if chunk in ("\n", "\r"):
                if buffer:
                    on_line(buffer)
                buffer = ""
            else:
                buffer += chunk
            if should_cancel():
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                return -1
        if buffer:
            on_line(buffer)
        return process.wait()


def parse_progress(line: str) -> tuple[float, str] | None:
    """(fraction 0-1, message) from a tqdm bar or a "progress <fraction> <message>" line; None otherwise."""
    line = line.strip()
    match = _TQDM.match(line)
    if match:
        total = int(match["total"])
        fraction = int(match["n"]) / total if total else int(match["pct"]) / 100.0
        parts = [(match["desc"] or "").strip(), (match["postfix"] or "").strip()]
        return min(max(fraction, 0.0), 1.0), ": ".join(p for p in parts if p)
    match = _PLAIN.match(line)
    if match:
        try:
            fraction = float(match["fraction"])
        except ValueError:
            return None
        return min(max(fraction, 0.0), 1.0), match["message"].strip()
    return None


def python_executable() -> str:
    """The Python that runs ``spinekit`` children: ``PythonSlicer`` inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def spinekit_command(subcommand: str, arguments: Sequence[str] = (), python: str | None = None) -> list[str]:
    """``[python, -m, spinekit, subcommand, *arguments]`` with every argument as a string."""
    if not subcommand or subcommand.startswith("-"):
        raise InputError(f"a spinekit subcommand is needed (e.g. 'segment'), got {subcommand!r}")
    return [python or python_executable(), "-m", "spinekit", subcommand, *(str(a) for a in arguments)]


def run_spinekit(
    command: Sequence[str],
    runner: ProcessRunner | None = None,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    keep_lines: int = 40,
) -> list[str]:
    """Run a command built by :func:`spinekit_command`; returns its output lines.

    Raises:
        ProcessCancelledError: ``should_cancel()`` became true.
        SpinekitProcessError: non-zero exit; the message ends with the last output lines.
    """
    runner = runner or SubprocessRunner()
    lines: list[str] = []

    def on_line(line: str) -> None:
        parsed = parse_progress(line)
        if parsed is not None:
            if progress is not None:
                progress(*parsed)
            return
        lines.append(line)
        logger.info("%s", line)

    logger.info("running %s", " ".join(command))
    code = runner.run(command, on_line, should_cancel or (lambda: False))
    if code < 0:
        raise ProcessCancelledError(f"{' '.join(command[2:4])} was cancelled")
    if code != 0:
        tail = "\n".join(lines[-keep_lines:])
        raise SpinekitProcessError(f"'{' '.join(command[2:4])}' failed with exit code {code}:\n{tail}")
    return lines
