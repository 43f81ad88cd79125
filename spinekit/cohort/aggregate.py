"""Gather what the subjects' stages wrote into cohort tables: metrics, image statistics, failures.

Everything is read back from the file system (the DONE/FAILED markers), so the tables describe the output
folder as it is, whichever run (or how many interrupted runs) produced it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from spinekit.cohort import markers
from spinekit.cohort.manifest import COVARIATE_COLUMNS, Manifest
from spinekit.tables import COLUMNS, write_table

FAILURE_COLUMNS = ["subject", "stage", "status", "reason", "row", "column"]
#: threads reading per-subject files (I/O bound; network file systems like many in flight).
READ_THREADS = 8


def _subject_tables(subject_dir: Path, stages: list[str]) -> list[pd.DataFrame]:
    frames = []
    for stage in stages:
        done = markers.read_json(subject_dir / stage / markers.DONE)
        if done is None:
            continue
        for output in done.get("outputs", []):
            path = Path(output["path"])
            if path.suffix != ".csv" or not path.exists():
                continue
            frame = pd.read_csv(path, keep_default_na=True)
            if not set(COLUMNS) - {"reason"} <= set(frame.columns):
                continue  # not a tidy table
            frame["reason"] = (
                frame["reason"].astype(object).where(frame["reason"].notna(), "") if "reason" in frame else ""
            )
            frame["stage"] = stage
            frame["table"] = path.stem
            frames.append(frame)
    return frames


def collect_metrics(out_dir: Path, manifest: Manifest, stages: list[str]) -> pd.DataFrame:
    """Every tidy table of every complete stage, one frame, with the manifest's covariates joined per subject."""
    subjects = manifest.subjects["subject_id"].astype(str).tolist()
    with ThreadPoolExecutor(READ_THREADS) as pool:
        parts = pool.map(lambda s: _subject_tables(out_dir / "subjects" / s, stages), subjects)
        frames = [frame for part in parts for frame in part]
    columns = [*COLUMNS, "stage", "table"]
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    metrics["subject"] = metrics["subject"].astype(str)
    covariates = [c for c in COVARIATE_COLUMNS if c in manifest.subjects.columns]
    if covariates:
        table = manifest.subjects[["subject_id", *covariates]].rename(columns={"subject_id": "subject"})
        table["subject"] = table["subject"].astype(str)
        metrics = metrics.merge(table, on="subject", how="left")
    return metrics


def collect_image_stats(out_dir: Path, manifest: Manifest) -> pd.DataFrame:
    """One row per subject from the qc stage's imagestats.json (histogram kept as a list column)."""
    rows = []
    for subject in manifest.subjects["subject_id"].astype(str):
        if markers.read_json(out_dir / "subjects" / subject / "qc" / markers.DONE) is None:
            continue
        stats = markers.read_json(out_dir / "subjects" / subject / "qc" / "imagestats.json")
        if stats:
            rows.append({"subject": subject, **stats})
    return pd.DataFrame(rows)


def collect_failures(out_dir: Path, manifest: Manifest, stages: list[str]) -> pd.DataFrame:
    """Manifest problems plus every stage whose latest outcome is FAILED.json (not superseded by DONE.json)."""
    rows = [
        {"subject": p.subject, "stage": "manifest", "status": "failed" if p.fatal else "warning",
         "reason": p.reason, "row": p.row, "column": p.column}
        for p in manifest.problems
    ]  # fmt: skip
    for subject in manifest.subjects["subject_id"].astype(str):
        for stage in stages:
            stage_dir = out_dir / "subjects" / subject / stage
            if (stage_dir / markers.DONE).exists():
                continue
            failed = markers.read_json(stage_dir / markers.FAILED)
            if failed:
                rows.append(
                    {"subject": subject, "stage": stage, "status": failed.get("status", "failed"),
                     "reason": failed.get("reason", ""), "row": None, "column": None}
                )  # fmt: skip
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def completion(out_dir: Path, manifest: Manifest, stages: list[str]) -> pd.DataFrame:
    """Subject x stage table of ``done`` / ``failed`` / ``blocked`` / ``pending``."""
    records = []
    for subject in manifest.subjects["subject_id"].astype(str):
        record = {"subject": subject}
        for stage in stages:
            stage_dir = out_dir / "subjects" / subject / stage
            if (stage_dir / markers.DONE).exists():
                record[stage] = "done"
            else:
                failed = markers.read_json(stage_dir / markers.FAILED)
                record[stage] = failed.get("status", "failed") if failed else "pending"
        records.append(record)
    return pd.DataFrame(records, columns=["subject", *stages])


def write_cohort_tables(out_dir: Path, manifest: Manifest, stages: list[str]) -> dict[str, Path]:
    """Write cohort_metrics.parquet/.csv, image_stats.csv, failures.csv and status.csv (all atomically)."""
    metrics = collect_metrics(out_dir, manifest, stages)
    written = {
        "metrics_parquet": write_table(metrics, out_dir / "cohort_metrics.parquet"),
        "metrics_csv": write_table(metrics, out_dir / "cohort_metrics.csv"),
        "failures": write_table(collect_failures(out_dir, manifest, stages), out_dir / "failures.csv"),
        "status": write_table(completion(out_dir, manifest, stages), out_dir / "status.csv"),
    }
    stats = collect_image_stats(out_dir, manifest)
    if len(stats):
        stats = stats.copy()
        if "histogram" in stats:
            stats["histogram"] = stats["histogram"].map(lambda h: " ".join(f"{v:.5f}" for v in h))
        written["image_stats"] = write_table(stats, out_dir / "image_stats.csv")
    return written
