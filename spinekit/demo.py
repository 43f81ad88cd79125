"""``spinekit demo``: generate a phantom pair and run every stage on it, printing what was written."""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from pathlib import Path

from spinekit.errors import SpinekitError

log = logging.getLogger(__name__)

#: Stages in pipeline order: (name, module exposing ``demo(workdir, phantom_dir) -> list[Path]``).
STAGES: tuple[tuple[str, str], ...] = (
    ("segment", "spinekit.segment.cli"),
    ("measure", "spinekit.morphometry.cli"),
    ("register", "spinekit.register.cli"),
    ("biomech", "spinekit.biomech.cli"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: ./demo_out)")
    parser.add_argument(
        "--stages", default=",".join(name for name, _ in STAGES), help="comma-separated stages to run (default: all)"
    )


def run_demo(out: Path, stages: list[str]) -> dict[str, list[Path]]:
    """Write the demo phantom into ``out/phantom`` and run ``stages`` on it; returns files per stage."""
    from spinekit.phantom import write_demo_phantom

    unknown = set(stages) - {name for name, _ in STAGES}
    if unknown:
        raise SpinekitError(f"unknown demo stage(s) {sorted(unknown)}; choose from {[n for n, _ in STAGES]}")
    phantom_dir = out / "phantom"
    start = time.perf_counter()
    written = {"phantom": sorted(write_demo_phantom(phantom_dir).values())}
    print(f"[phantom] {time.perf_counter() - start:5.1f} s  ->  {phantom_dir}")
    for name, module_name in STAGES:
        if name not in stages:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            print(f"[{name}] not available in this installation ({exc})")
            continue
        start = time.perf_counter()
        written[name] = module.demo(out, phantom_dir)
        print(f"[{name}] {time.perf_counter() - start:5.1f} s  ->  {len(written[name])} files")
    return written


def run(args: argparse.Namespace) -> int:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    written = run_demo(args.out, stages)
    print(f"\nspinekit demo wrote into {args.out.resolve()}:")
    for stage, paths in written.items():
        for path in paths:
            print(f"  {stage:9s} {path}")
    return 0
