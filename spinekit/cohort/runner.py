"""Run stages over the subjects of a manifest: in-process, on a Dask LocalCluster, or on any Dask scheduler.

One Dask task per subject and stage; a stage's task depends on the tasks of the stages it requires. Workers are
processes with one thread each (OpenSim and ITK do not share the GIL well) and a memory limit each, so a subject
that needs too much memory kills its worker, not the machine: Dask restarts the worker, retries the task on
another one up to ``distributed.scheduler.allowed-failures`` times, and the subject is then recorded as failed.

Resumability comes from the file system, not from Dask: a stage whose ``DONE.json`` is valid is never submitted,
a stage that failed is retried on the next run, and every output is written atomically.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from spinekit.cohort import markers
from spinekit.cohort.stages import Stage, StageFunc, resolve_stages
from spinekit.errors import SpinekitError

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

#: default per-worker memory limit: a 512^3 float CT plus a network and an OpenSim model fit in 4 GiB.
DEFAULT_MEMORY_LIMIT = "4GiB"
#: at most this many subjects are in flight per worker thread (bounds scheduler and client memory for 30,000).
SUBJECTS_IN_FLIGHT_PER_THREAD = 8


@dataclass(frozen=True)
class TaskResult:
    """What one subject x stage task did: ``done``, ``skipped`` (already complete), ``failed`` or ``blocked``."""

    subject: str
    stage: str
    status: str
    reason: str = ""
    seconds: float = 0.0


@dataclass
class RunSummary:
    """Outcome of :func:`run_stages`."""

    results: list[TaskResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[TaskResult]:
        return [r for r in self.results if r.status in ("failed", "blocked")]


def _clear_stage_dir(path: Path) -> None:
    """Remove a stage's previous (incomplete or failed) outputs, including temporary files of a killed run."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def run_stage_task(row: dict, subject_dir: str, stage: Stage, upstream: list[TaskResult] | None = None) -> TaskResult:
    """Run one stage for one subject; never raises (a failure is written to FAILED.json and returned).

    Args:
        row: the subject's manifest row.
        subject_dir: ``OUT/subjects/<id>``.
        stage: the stage to run.
        upstream: results of the stages it requires in this run (a failed one blocks this stage).
    """
    subject = str(row["subject_id"])
    base = Path(subject_dir)
    out = base / stage.name
    blocking = [r for r in (upstream or []) if r.status in ("failed", "blocked")]
    if blocking:
        first = blocking[0]
        reason = f"not run: stage '{first.stage}' did not complete ({first.reason})"
        _clear_stage_dir(out)
        markers.write_failed(out, stage.name, subject, "blocked", reason)
        return TaskResult(subject, stage.name, "blocked", reason)
    start = time.perf_counter()
    try:
        _clear_stage_dir(out)
        written = stage.func(row, base) or []
        inputs = stage.input_files(row, base)
        seconds = time.perf_counter() - start
        markers.write_done(out, stage.name, subject, inputs, [Path(p) for p in written], seconds)
        return TaskResult(subject, stage.name, "done", "", seconds)
    except Exception as exc:  # noqa: BLE001 - a subject's failure must never stop the cohort
        seconds = time.perf_counter() - start
        if isinstance(exc, SpinekitError):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        (out / markers.DONE).unlink(missing_ok=True)
        markers.write_failed(out, stage.name, subject, "failed", reason, traceback.format_exc())
        return TaskResult(subject, stage.name, "failed", reason, seconds)


@dataclass
class _Plan:
    row: dict
    subject_dir: Path
    stages: list[Stage]


def plan_subjects(rows: list[dict], out_dir: Path, stages: list[Stage], force: bool = False) -> tuple[list[_Plan], int]:
    """Which stages each subject still needs; returns the plans and the number of stage runs skipped.

    A stage is skipped when its DONE marker is valid and no stage it requires is rerun in this run.
    """
    plans: list[_Plan] = []
    skipped = 0
    for row in rows:
        subject_dir = out_dir / "subjects" / str(row["subject_id"])
        todo: list[Stage] = []
        for stage in stages:
            rerun_upstream = any(s.name in stage.requires for s in todo)
            complete = not force and markers.is_complete(subject_dir / stage.name, stage.input_files(row, subject_dir))
            if complete and not rerun_upstream:
                skipped += 1
            else:
                todo.append(stage)
        if todo:
            plans.append(_Plan(row, subject_dir, todo))
    return plans, skipped


def _run_in_process(plans: list[_Plan], total: int, progress: Progress | None) -> list[TaskResult]:
    results: list[TaskResult] = []
    for plan in plans:
        done: dict[str, TaskResult] = {}
        for stage in plan.stages:
            upstream = [done[name] for name in stage.requires if name in done]
            result = run_stage_task(plan.row, str(plan.subject_dir), stage, upstream)
            done[stage.name] = result
            results.append(result)
            if progress:
                progress(len(results) / max(1, total), f"{result.subject} {result.stage}: {result.status}")
    return results


def _worker_death_reason(exc: BaseException) -> str:
    return (
        f"worker died while running this task ({type(exc).__name__}: {exc}); usually the subject needs more memory "
        "than --memory-limit allows or a library crashed; rerun to retry, or raise --memory-limit"
    )


def _run_on_dask(client, plans: list[_Plan], total: int, progress: Progress | None) -> list[TaskResult]:
    from distributed import as_completed

    threads = max(1, sum(client.nthreads().values()))
    window = max(4, SUBJECTS_IN_FLIGHT_PER_THREAD * threads)
    results: list[TaskResult] = []
    info: dict = {}  # future key -> (plan, stage)
    remaining: dict[int, int] = {}  # plan index -> tasks not yet finished
    queue = iter(enumerate(plans))
    completed = as_completed()

    def submit_next() -> bool:
        try:
            index, plan = next(queue)
        except StopIteration:
            return False
        futures: dict[str, object] = {}
        for stage in plan.stages:
            upstream = [futures[name] for name in stage.requires if name in futures]
            future = client.submit(
                run_stage_task,
                plan.row,
                str(plan.subject_dir),
                stage,
                upstream,
                key=f"{stage.name}-{plan.row['subject_id']}-{time.time_ns()}",
                pure=False,
            )
            futures[stage.name] = future
            info[future.key] = (plan, stage, index)
            completed.add(future)
        remaining[index] = len(plan.stages)
        return True

    for _ in range(window):
        if not submit_next():
            break
    for future in completed:
        plan, stage, index = info.pop(future.key)
        subject = str(plan.row["subject_id"])
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - KilledWorker, or an upstream task's worker died
            cause = exc
            upstream_dead = any(
                r.subject == subject and r.stage in stage.requires and r.status in ("failed", "blocked")
                for r in results
            )
            if upstream_dead:
                reason = f"not run: a stage it requires did not complete ({type(cause).__name__})"
                status = "blocked"
            else:
                reason = _worker_death_reason(cause)
                status = "failed"
            out = plan.subject_dir / stage.name
            (out / markers.DONE).unlink(missing_ok=True)
            markers.write_failed(out, stage.name, subject, status, reason)
            result = TaskResult(subject, stage.name, status, reason)
        results.append(result)
        future.release()
        remaining[index] -= 1
        if remaining[index] == 0:
            del remaining[index]
            submit_next()
        if progress:
            progress(len(results) / max(1, total), f"{subject} {stage.name}: {result.status}")
    return results


def _warm_up(names: list[str]) -> list[str]:
    """Import on a worker what the stages will import, so timing and "not available" show up front."""
    import importlib

    missing = []
    for module in names:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def start_client(workers: int, scheduler: str | None = None, memory_limit: str = DEFAULT_MEMORY_LIMIT):
    """A Dask client: connected to ``scheduler`` when given, else on a fresh LocalCluster of worker processes."""
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=memory_limit,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


def run_stages(
    rows: list[dict],
    out_dir: str | Path,
    stages: list[str] | tuple[str, ...],
    *,
    registry: Mapping[str, Stage | StageFunc] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    client=None,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    force: bool = False,
    warm_modules: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> RunSummary:
    """Run the selected stages for every subject that still needs them.

    Args:
        rows: manifest rows (see :meth:`spinekit.cohort.manifest.Manifest.rows`).
        out_dir: output folder; subjects go to ``out_dir/subjects/<id>/<stage>/``.
        stages: stage names, in any order (dependencies are ordered first).
        registry: ``name -> Stage | callable`` (default: the built-in stages).
        workers: worker processes of the LocalCluster; 0 runs in this process without Dask.
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); overrides ``workers``.
        client: an existing ``distributed.Client`` to use (neither started nor closed here).
        memory_limit: per-worker memory limit of the LocalCluster (e.g. ``"4GiB"``).
        force: rerun stages even when they are complete.
        warm_modules: modules every worker imports before the clock starts.
        progress: ``progress(fraction, message)`` after each task.

    Returns:
        A :class:`RunSummary`; ``seconds`` is the processing time after the workers were ready.
    """
    out_dir = Path(out_dir)
    (out_dir / "subjects").mkdir(parents=True, exist_ok=True)
    selected = resolve_stages(list(stages), registry)
    plans, skipped_count = plan_subjects(rows, out_dir, selected, force)
    total = sum(len(p.stages) for p in plans)
    skipped = [TaskResult("", "", "skipped")] * skipped_count
    log.info("%d stage runs to do, %d already complete", total, skipped_count)
    if not plans:
        return RunSummary(results=skipped, workers=workers)
    if workers == 0 and scheduler is None and client is None:
        start = time.perf_counter()
        results = _run_in_process(plans, total, progress)
        return RunSummary(results=skipped + results, seconds=time.perf_counter() - start, workers=0)
    own_cluster = None
    own_client = client is None
    if own_client:
        client, own_cluster = start_client(workers, scheduler, memory_limit)
    try:
        if warm_modules:
            client.run(_warm_up, list(warm_modules))
        n_workers = len(client.scheduler_info().get("workers", {}))
        start = time.perf_counter()
        results = _run_on_dask(client, plans, total, progress)
        return RunSummary(results=skipped + results, seconds=time.perf_counter() - start, workers=n_workers)
    finally:
        if own_client:
            client.close()
            if own_cluster is not None:
                own_cluster.close()
