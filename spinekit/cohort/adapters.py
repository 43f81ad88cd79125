"""Adapters from the cohort's stage contract to the register and biomech packages.

Kept apart from :mod:`spinekit.cohort.stages` because they follow those packages' APIs; each imports its package
inside the function, so a missing package makes only its stage "not available". Both call the same file-level
functions as the ``spinekit register`` and ``spinekit biomech`` commands, so a cohort subject's outputs are exactly
what the single-subject command writes.
"""

from __future__ import annotations

import math
from pathlib import Path

from spinekit.cohort.stages import import_stage_module, read_spine
from spinekit.errors import InputError


def _covariate(row: dict, name: str) -> float:
    value = row.get(name)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise InputError(
            f"the biomech stage needs {name} for subject {row['subject_id']}: add sex, age, height_cm and weight_kg "
            "columns to the manifest (or leave biomech out of --stages)"
        )
    return value


def _modality(row: dict) -> str:
    return "MRI" if str(row.get("modality") or "").lower() in ("mr", "mri") else "CT"


def run_register(row: dict, subject_dir: Path, spine: Path, out: Path) -> list[Path]:
    """Register the follow-up to baseline vertebra by vertebra (as ``spinekit register``)."""
    cli = import_stage_module("register", "spinekit.register.cli")
    read_spine(row, subject_dir)  # refuses a subject without vertebrae with a clear reason
    followup_spine = Path(row["followup_spine"]) if row.get("followup_spine") else None
    return cli.run_register(
        Path(row["image"]), spine, Path(row["followup"]), out, followup_spine, subject=str(row["subject_id"])
    )


def run_biomech(row: dict, subject_dir: Path, spine_file: Path, out: Path) -> list[Path]:
    """Build and solve the subject's OpenSim model (as ``spinekit biomech``): loads, strength, risk, model, figure."""
    cli = import_stage_module("biomech", "spinekit.biomech.cli")
    subject = str(row["subject_id"])
    sex = str(row.get("sex") or "").strip().lower()
    sex = {"m": "male", "f": "female"}.get(sex, sex)
    if sex not in ("male", "female"):
        raise InputError(f"the biomech stage needs sex (M/F) for subject {subject}: add a sex column to the manifest")
    age, height, weight = (_covariate(row, c) for c in ("age", "height_cm", "weight_kg"))
    read_spine(row, subject_dir)
    muscles = Path(row["muscles"]) if row.get("muscles") else subject_dir / "segment" / "muscles.nii.gz"
    return cli.biomech_files(
        spine_file, out, sex, age, height, weight,
        muscles_path=muscles if muscles.exists() else None,
        image_path=Path(row["image"]), modality=_modality(row), subject=subject,
    )  # fmt: skip
