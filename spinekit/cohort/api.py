"""``run_cohort``: validate the manifest, run the stages, aggregate the tables, write the report."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spinekit import __version__
from spinekit.cohort.aggregate import write_cohort_tables
from spinekit.cohort.manifest import Manifest, read_manifest
from spinekit.cohort.markers import write_json_atomic
from spinekit.cohort.runner import DEFAULT_MEMORY_LIMIT, Progress, RunSummary, run_stages
from spinekit.cohort.stages import DEFAULT_STAGES, Stage, StageFunc, resolve_stages

log = logging.getLogger(__name__)

#: modules the built-in stages import; workers import them before the clock starts.
STAGE_MODULES = {
    "segment": "spinekit.segment.api",
    "measure": "spinekit.morphometry.measure",
    "register": "spinekit.register.pipeline",
    "biomech": "spinekit.biomech",
    "qc": "spinekit.cohort.imagestats",
}


@dataclass
class CohortResult:
    """What :func:`run_cohort` did and wrote."""

    out_dir: Path
    manifest: Manifest
    run: RunSummary
    files: dict[str, Path] = field(default_factory=dict)
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def n_failed(self) -> int:
        return int((self.failures["status"] != "warning").sum()) if len(self.failures) else 0


def run_cohort(
    manifest: str | Path | Manifest,
    out_dir: str | Path,
    stages: list[str] | tuple[str, ...] = DEFAULT_STAGES,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    client=None,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    registry: Mapping[str, Stage | StageFunc] | None = None,
    qc: bool = True,
    report: bool = True,
    force: bool = False,
    root: str | Path | None = None,
    allow_outside_root: bool = False,
    progress: Progress | None = None,
) -> CohortResult:
    """Run the pipeline over a manifest; rerunning it skips what is complete and retries what failed.

    Args:
        manifest: manifest CSV (or an already validated :class:`Manifest`).
        out_dir: output folder (``subjects/<id>/<stage>/``, ``failures.csv``, ``cohort_metrics.parquet``,
            ``report.html``).
        stages: stage names (``segment, measure, register, biomech``; also ``volumes``).
        workers: LocalCluster worker processes (0: in this process, no Dask).
        scheduler: Dask scheduler address to run on instead of a LocalCluster.
        client: an existing ``distributed.Client``.
        memory_limit: per-worker memory limit of the LocalCluster.
        registry: ``name -> Stage | callable`` replacing the built-in stages (tests, benchmarks, plug-ins).
        qc: also run the ``qc`` stage (image statistics for the report's acquisition groups).
        report: write ``report.html``.
        force: rerun complete stages too.
        root, allow_outside_root: see :func:`spinekit.cohort.manifest.read_manifest`.
        progress: ``progress(fraction, message)`` after each task.
    """
    started = time.time()
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, root=root, allow_outside_root=allow_outside_root)
    for problem in manifest.problems:
        log.warning("manifest row %d (%s) %s: %s", problem.row, problem.subject, problem.column, problem.reason)
    names = list(stages)
    if qc and "qc" not in names:
        names = ["qc", *names]
    if registry is not None and qc and "qc" not in registry:
        from spinekit.cohort.stages import STAGES

        registry = {**registry, "qc": STAGES["qc"]}
    selected = [s.name for s in resolve_stages(names, registry)]
    warm = tuple(STAGE_MODULES[n] for n in selected if n in STAGE_MODULES) if registry is None else ()
    summary = run_stages(
        manifest.rows(),
        out_dir,
        selected,
        registry=registry,
        workers=workers,
        scheduler=scheduler,
        client=client,
        memory_limit=memory_limit,
        force=force,
        warm_modules=warm,
        progress=progress,
    )
    files = write_cohort_tables(out_dir, manifest, selected)
    failures = pd.read_csv(files["failures"], keep_default_na=False)
    if report:
        from spinekit.cohort.aggregate import collect_image_stats
        from spinekit.cohort.report import build_report

        metrics = pd.read_parquet(files["metrics_parquet"])
        status = pd.read_csv(files["status"])
        files["report"] = build_report(out_dir, manifest, metrics, collect_image_stats(out_dir, manifest), failures,
                                       status)  # fmt: skip
    run_info = {
        "spinekit_version": __version__,
        "manifest": str(manifest.path),
        "stages": selected,
        "workers": summary.workers,
        "scheduler": scheduler,
        "memory_limit": memory_limit,
        "processing_seconds": round(summary.seconds, 3),
        "total_seconds": round(time.time() - started, 3),
        "counts": {s: summary.count(s) for s in ("done", "skipped", "failed", "blocked")},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    files["run"] = write_json_atomic(run_info, out_dir / "run.json")
    return CohortResult(out_dir, manifest, summary, files, failures)
