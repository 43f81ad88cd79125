"""Adapters from the cohort's stage contract to the register and biomech packages.

Kept apart from :mod:`spinekit.cohort.stages` because they follow those packages' APIs; each imports its package
inside the function, so a missing package makes only its stage "not available".
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from spinekit.cohort.stages import StageUnavailableError, import_stage_module, read_spine
from spinekit.errors import InputError

#: the lumbar disc levels and their disc label (100 + upper vertebra, VerSe numbering; spinekit.labels).
_DISC_LABELS = {"L1/L2": 120, "L2/L3": 121, "L3/L4": 122, "L4/L5": 123, "L5/S1": 124}
LOAD_METHOD = "OpenSim static optimization + joint reaction (spinekit.biomech)"


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


def run_register(row: dict, subject_dir: Path, spine: Path, out: Path) -> list[Path]:
    """Register the follow-up to baseline vertebra by vertebra (``spinekit.register.pipeline``)."""
    pipeline = import_stage_module("register", "spinekit.register.pipeline")
    entry = getattr(pipeline, "register_subject", None) or getattr(pipeline, "run_pipeline", None)
    if entry is None:
        raise StageUnavailableError(
            "stage 'register' is not available: spinekit.register.pipeline has no register_subject(); "
            "leave 'register' out of --stages"
        )
    written = entry(
        baseline_image=Path(row["image"]), followup_image=Path(row["followup"]), baseline_spine=spine, out_dir=out
    )
    return [Path(p) for p in (written or [])]


def run_biomech(row: dict, subject_dir: Path, spine_file: Path, out: Path) -> list[Path]:
    """Build and solve the subject's OpenSim model for the default tasks; writes loads.csv (tidy) and model.osim."""
    anatomy_mod = import_stage_module("biomech", "spinekit.biomech.anatomy")
    model_mod = import_stage_module("biomech", "spinekit.biomech.model")
    solve_mod = import_stage_module("biomech", "spinekit.biomech.solve")
    tasks_mod = import_stage_module("biomech", "spinekit.biomech.tasks")
    from spinekit.io import atomic_path, read_labels, read_volume
    from spinekit.tables import Measurement, to_frame, write_table

    subject = str(row["subject_id"])
    sex = row.get("sex")
    if not sex:
        raise InputError(f"the biomech stage needs sex (F/M) for subject {subject}: add a sex column to the manifest")
    age, height, weight = (_covariate(row, c) for c in ("age", "height_cm", "weight_kg"))
    image = read_volume(row["image"])
    spine = read_spine(row, subject_dir, image)
    muscles_file = Path(row["muscles"]) if row.get("muscles") else subject_dir / "segment" / "muscles.nii.gz"
    muscles = read_labels(muscles_file, image=image) if muscles_file.exists() else None
    modality = "MR" if str(row.get("modality") or "").lower() in ("mr", "mri") else "CT"
    anatomy = anatomy_mod.anatomy_from_labels(
        spine, muscles, image, sex, age, height, weight, modality=modality, subject=subject
    )
    built = model_mod.build_model(anatomy, name=f"spinekit_{subject}")
    tasks = [tasks_mod.TASKS[name] for name in tasks_mod.DEFAULT_TASKS]
    results = solve_mod.solve_tasks(built, tasks)
    rows = []
    for result in results:
        note = "" if result.converged else f"static optimization did not converge ({'; '.join(result.notes)})"
        for level in result.levels.itertuples():
            label = _DISC_LABELS.get(str(level.level), 0)
            for metric in ("compression_N", "shear_ap_N", "shear_lateral_N"):
                value = float(getattr(level, metric))
                rows.append(
                    Measurement(str(level.level), label, f"{result.task.name}_{metric[:-2]}_force",
                                value if not note else math.nan, "N", LOAD_METHOD, note)
                )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = [write_table(to_frame(rows, subject=subject), out / "loads.csv")]
    model_path = out / "model.osim"
    tmp = atomic_path(model_path)
    try:
        built.model.printToXML(str(tmp))
        os.replace(tmp, model_path)
    finally:
        tmp.unlink(missing_ok=True)
    written.append(model_path)
    return written
