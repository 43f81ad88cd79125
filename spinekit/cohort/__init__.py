"""Batch processing of a cohort: many subjects, local or on a Dask cluster, resumable, with a report.

``spinekit cohort MANIFEST.csv --out DIR`` (see :mod:`spinekit.cohort.cli`); from Python,
:func:`spinekit.cohort.api.run_cohort`.
"""

from __future__ import annotations

from spinekit.cohort.cli import add_arguments, run

__all__ = ["add_arguments", "run", "run_cohort"]


def __getattr__(name: str):
    if name == "run_cohort":
        from spinekit.cohort.api import run_cohort

        return run_cohort
    raise AttributeError(name)
