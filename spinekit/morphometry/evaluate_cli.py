"""``spinekit evaluate``: agreement between two segmentations (Dice, HD95, MSD) or two measurement tables."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from spinekit.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred", type=Path, required=True, help="predicted label map (or metrics table with --measures)"
    )
    parser.add_argument(
        "--ref", type=Path, required=True, help="reference label map (or metrics table with --measures)"
    )
    parser.add_argument(
        "--measures", action="store_true", help="inputs are metric tables (CSV/Parquet), not label maps"
    )
    parser.add_argument("--out", type=Path, help="write the agreement table (CSV) and Bland-Altman plots here")


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path} does not exist")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def evaluate(pred: Path, ref: Path, measures: bool = False, out: Path | None = None) -> pd.DataFrame:
    """The agreement table; with ``out``, also written there (``agreement.csv``, Bland-Altman PNGs)."""
    from spinekit.morphometry.agreement import label_agreement, measure_agreement
    from spinekit.tables import write_table

    if measures:
        table = measure_agreement(_read_table(pred), _read_table(ref), plot_dir=out)
    else:
        from spinekit.io import read_labels

        table = label_agreement(read_labels(pred), read_labels(ref))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_table(table, out / "agreement.csv")
    return table


def run(args: argparse.Namespace) -> int:
    table = evaluate(args.pred, args.ref, args.measures, args.out)
    if table.empty:
        print("no common labels / metrics to compare")
        return 1
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    return 0
