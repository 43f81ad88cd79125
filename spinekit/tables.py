"""Tidy result tables: one row per subject x structure x metric, with unit and method."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spinekit.io import atomic_path

COLUMNS = ["subject", "structure", "label", "metric", "value", "unit", "method", "reason"]


@dataclass(frozen=True)
class Measurement:
    """One tidy row. ``reason`` says why ``value`` is NaN (empty otherwise)."""

    structure: str
    label: int
    metric: str
    value: float
    unit: str
    method: str
    reason: str = ""
    subject: str = ""

    def as_row(self) -> dict:
        value = float(self.value) if self.value is not None else math.nan
        return {
            "subject": self.subject,
            "structure": self.structure,
            "label": int(self.label),
            "metric": self.metric,
            "value": value,
            "unit": self.unit,
            "method": self.method,
            "reason": self.reason,
        }


def missing(structure: str, label: int, metric: str, unit: str, method: str, reason: str) -> Measurement:
    """A NaN measurement with the reason it could not be taken."""
    return Measurement(structure, label, metric, math.nan, unit, method, reason)


def to_frame(rows: Iterable[Measurement | dict], subject: str = "") -> pd.DataFrame:
    """Tidy DataFrame from measurements; fills ``subject`` where it is empty."""
    records = [row.as_row() if isinstance(row, Measurement) else dict(row) for row in rows]
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    if subject:
        frame["subject"] = frame["subject"].replace("", subject).fillna(subject)
    frame["reason"] = frame["reason"].fillna("")
    return frame


def write_table(frame: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write CSV or Parquet (by ``fmt`` or suffix) atomically."""
    path = Path(path)
    fmt = fmt or ("parquet" if path.suffix == ".parquet" else "csv")
    tmp = atomic_path(path)
    try:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        elif fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            raise ValueError(f"table format must be 'csv' or 'parquet', not {fmt!r}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def value(frame: pd.DataFrame, structure: str, metric: str) -> float:
    """The value of one structure's metric (NaN when absent)."""
    hit = frame[(frame["structure"] == structure) & (frame["metric"] == metric)]
    return float(hit["value"].iloc[0]) if len(hit) else math.nan
