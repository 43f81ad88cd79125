"""Whole biomech stage for one subject: build, solve the tasks, strength, risk, tidy tables (core; no printing)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spinekit import labels as lab
from spinekit.biomech import risk as R
from spinekit.biomech import strength as S
from spinekit.biomech.anatomy import LUMBAR, T12, SubjectAnatomy
from spinekit.biomech.model import BuiltModel, build_model
from spinekit.biomech.solve import TaskResult, solve_tasks
from spinekit.biomech.tasks import Task
from spinekit.io import Volume
from spinekit.tables import COLUMNS

log = logging.getLogger(__name__)
LEVEL_LABELS = {"T12/L1": 119, "L1/L2": 120, "L2/L3": 121, "L3/L4": 122, "L4/L5": 123, "L5/S1": 124}


@dataclass
class BiomechResult:
    built: BuiltModel
    results: list[TaskResult]
    loads: pd.DataFrame
    strength: pd.DataFrame
    risk: pd.DataFrame
    flags: list[str] = field(default_factory=list)


def internal_calibration(image: Volume, muscles: Volume) -> S.Calibration:
    """Phantomless calibration from the median HU of the labelled muscles and of adipose-window voxels."""
    muscle_hu = float(np.median(image.array[muscles.array > 0])) if np.any(muscles.array > 0) else math.nan
    values = image.array
    fat = values[(values >= S.FAT_HU_WINDOW[0]) & (values <= S.FAT_HU_WINDOW[1])]
    fat_hu = float(np.median(fat)) if fat.size > 100 else math.nan
    return S.phantomless_calibration(muscle_hu, fat_hu)


def strength_table(anatomy: SubjectAnatomy, calibration: S.Calibration | None) -> tuple[pd.DataFrame, list[str]]:
    """Per-vertebra vBMD, CSA and strength (N) with the method used and flags."""
    rows, flags = [], []
    reg = S.DEFAULT_REGRESSION
    for v in (T12, *LUMBAR):
        name = lab.VERTEBRA_NAMES[v]
        body = anatomy.bodies.get(v)
        method, reason = "", ""
        vbmd, csa = math.nan, math.nan
        if body is not None:
            csa = body.csa_mm2
            vbmd = body.vbmd_mg_cm3
            if not np.isfinite(vbmd) and calibration is not None and np.isfinite(body.trabecular_hu):
                vbmd = calibration.vbmd(body.trabecular_hu)
        if np.isfinite(vbmd) and np.isfinite(csa):
            strength = S.qct_strength(vbmd, csa, reg)
            method = (
                f"QCT {reg.name} (R2 {reg.r2} of the form, {reg.source}); "
                f"{calibration.method if calibration else 'vBMD given'}"
            )
        elif v == T12 and body is None:
            continue
        else:
            strength = S.reference_strength(name, anatomy.sex, anatomy.age, reg)
            method = "age/sex/level reference strength"
            reason = "not patient-specific (no CT density for this vertebra)"
        lesion = body.lesion_fraction if body is not None else 0.0
        adjusted = S.lesion_adjusted(strength, lesion)
        if lesion > 0:
            method += f"; lytic fraction {lesion:.3f}: {S.LYTIC_RULE}"
        rows.append(
            {
                "vertebra": name,
                "label": v,
                "vbmd_mg_cm3": vbmd,
                "csa_mm2": csa,
                "strength_N": adjusted,
                "lytic_fraction": lesion,
                "method": method,
                "reason": reason,
            }
        )
        if reason:
            flags.append(f"{name}: {reason}")
    return pd.DataFrame(rows), flags


def run_biomech(
    anatomy: SubjectAnatomy,
    tasks: list[Task],
    calibration: S.Calibration | None = None,
    progress: Callable[[float, str], None] | None = None,
    base_model: str | os.PathLike | None = None,
    name_map: dict | None = None,
) -> BiomechResult:
    """Build the personalised model (or personalise the user's ``base_model`` .osim through ``name_map``, see
    :mod:`spinekit.biomech.base_model`), solve ``tasks``, and compute strength and factor of risk."""
    if base_model is not None:
        from spinekit.biomech.base_model import load_base_model

        built = load_base_model(base_model, anatomy, name_map)
    else:
        built = build_model(anatomy)
    results = solve_tasks(built, tasks, progress)
    strength, sflags = strength_table(anatomy, calibration)
    subject = anatomy.subject
    load_rows, risk_rows = [], []
    for res in results:
        status = "converged" if res.converged else "NOT converged: " + "; ".join(res.notes)
        method = f"OpenSim static optimization + joint reaction ({status}; max reserve {res.max_reserve_nm:.2f} N m)"
        for _, lv in res.levels.iterrows():
            for metric in ("compression_N", "shear_ap_N", "shear_lateral_N"):
                load_rows.append(
                    {
                        "subject": subject,
                        "structure": lv["level"],
                        "label": LEVEL_LABELS[lv["level"]],
                        "metric": f"{res.task.name}:{metric[:-2]}",
                        "value": float(lv[metric]),
                        "unit": "N",
                        "method": method,
                        "reason": "" if res.converged else "optimisation not converged",
                    }
                )
        for _, st in strength.iterrows():
            load = R.vertebral_load(res.levels, st["vertebra"])
            if not np.isfinite(load):
                continue
            ratio = R.factor_of_risk(load, st["strength_N"])
            risk_rows.append(
                {
                    "subject": subject,
                    "vertebra": st["vertebra"],
                    "label": int(st["label"]),
                    "task": res.task.name,
                    "load_N": load,
                    "strength_N": st["strength_N"],
                    "factor_of_risk": ratio,
                    "class": R.classify(ratio),
                    "converged": res.converged,
                    "strength_method": st["method"],
                    "reason": st["reason"],
                }
            )
    loads = pd.DataFrame(load_rows, columns=COLUMNS)
    strength_tidy = []
    for _, st in strength.iterrows():
        for metric, unit in (("vbmd", "mg/cm3"), ("csa", "mm2"), ("lytic_fraction", "1"), ("strength", "N")):
            key = {
                "vbmd": "vbmd_mg_cm3",
                "csa": "csa_mm2",
                "lytic_fraction": "lytic_fraction",
                "strength": "strength_N",
            }[metric]
            value = float(st[key])
            strength_tidy.append(
                {
                    "subject": subject,
                    "structure": st["vertebra"],
                    "label": int(st["label"]),
                    "metric": metric,
                    "value": value,
                    "unit": unit,
                    "method": st["method"],
                    "reason": st["reason"] or ("" if np.isfinite(value) else "not measured"),
                }
            )
    flags = list(built.flags) + sflags
    return BiomechResult(
        built, results, loads, pd.DataFrame(strength_tidy, columns=COLUMNS), pd.DataFrame(risk_rows), flags
    )
