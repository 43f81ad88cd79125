"""``spinekit cohort MANIFEST.csv --out DIR``: the whole pipeline over a cohort, resumable."""

from __future__ import annotations

import argparse
import sys

from spinekit.cohort.runner import DEFAULT_MEMORY_LIMIT
from spinekit.cohort.stages import DEFAULT_STAGES, STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="CSV with columns subject_id,image [,followup,sex,age,height_cm,weight_kg,"
                        "fat,water,spine,muscles,reference_<metric>[@<structure>]]")  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    parser.add_argument(
        "--stages",
        default=",".join(DEFAULT_STAGES),
        help=f"comma-separated stages out of {', '.join(STAGES)} (default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes; 0 runs in-process")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument(
        "--memory-limit", default=DEFAULT_MEMORY_LIMIT, help="memory per LocalCluster worker (default: %(default)s)"
    )
    parser.add_argument("--root", help="folder relative manifest paths start from (default: the manifest's folder)")
    parser.add_argument("--allow-outside-root", action="store_true", help="accept paths outside the root")
    parser.add_argument("--force", action="store_true", help="rerun stages that are already complete")
    parser.add_argument("--no-qc", action="store_true", help="skip the image statistics (acquisition groups)")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import logging

    from tqdm import tqdm

    from spinekit.cohort.api import run_cohort

    if not getattr(args, "verbose", False):
        # Dask logs every worker start/stop at INFO; the progress bar says what matters.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bar = None
    steps = 10_000

    def progress(fraction: float, message: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=steps, desc="cohort", unit="", bar_format="{l_bar}{bar}| [{elapsed}<{remaining}] {postfix}"
            )
        bar.update(int(round(fraction * steps)) - bar.n)
        bar.set_postfix_str(message, refresh=True)

    result = run_cohort(
        args.manifest,
        args.out,
        stages,
        workers=args.workers,
        scheduler=args.scheduler,
        memory_limit=args.memory_limit,
        qc=not args.no_qc,
        report=not args.no_report,
        force=args.force,
        root=args.root,
        allow_outside_root=args.allow_outside_root,
        progress=None if args.no_progress else progress,
    )
    if bar is not None:
        bar.close()
    run = result.run
    print(
        f"{len(result.manifest.subjects)} subjects: {run.count('done')} stage runs done, {run.count('skipped')} "
        f"already complete, {run.count('failed')} failed, {run.count('blocked')} blocked "
        f"({run.seconds:.1f} s on {run.workers or 'no'} workers)"
    )
    if result.n_failed:
        print(f"{result.n_failed} failures listed in {result.files['failures']}", file=sys.stderr)
    for name in ("metrics_parquet", "report"):
        if name in result.files:
            print(f"{name}: {result.files[name]}")
    return 1 if result.n_failed else 0
