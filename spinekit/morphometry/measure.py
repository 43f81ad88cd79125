"""Measure one subject: every morphometric of the spine (and muscles) as one tidy table."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from spinekit import labels as lab
from spinekit.errors import InputError, LabelError
from spinekit.io import Volume
from spinekit.morphometry.body import body_measurements
from spinekit.morphometry.canal import canal_measurements
from spinekit.morphometry.context import SpineModel, build_spine_model
from spinekit.morphometry.curvature import curvature_measurements
from spinekit.morphometry.discs import disc_measurements
from spinekit.morphometry.frames import VertebraFrame
from spinekit.morphometry.muscles import muscle_cross_sections
from spinekit.morphometry.spine_report import spine_report_measurements
from spinekit.tables import COLUMNS, Measurement, to_frame

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


def _level_rows(model: SpineModel) -> list[Measurement]:
    """Explicit rows for transitional (L6, T13) and missing intermediate levels."""
    rows = []
    if lab.L6 in model.frames:
        rows.append(
            Measurement(
                "L6",
                lab.L6,
                "transitional_vertebra",
                1.0,
                "1",
                "L6 label present: lumbosacral transitional vertebra (six lumbar levels)",
            )
        )
    if lab.T13 in model.frames:
        rows.append(Measurement("T13", lab.T13, "transitional_vertebra", 1.0, "1", "T13 label present"))
    present = [v for v in model.order if v not in (lab.L6, lab.T13)]
    if present:
        standard = [v for v in lab.CRANIOCAUDAL_ORDER if v not in (lab.L6, lab.T13)]
        span = standard[standard.index(present[0]) : standard.index(present[-1]) + 1]
        for v in span:
            if v not in model.frames:
                rows.append(
                    Measurement(
                        lab.VERTEBRA_NAMES[v],
                        v,
                        "vertebra_volume",
                        float("nan"),
                        "mm3",
                        "voxel count x voxel volume",
                        "level missing from the label map between present levels",
                    )
                )
    return rows


def measure_subject(
    spine: Volume,
    image: Volume | None = None,
    muscles: Volume | None = None,
    fat: Volume | None = None,
    water: Volume | None = None,
    subject: str = "",
    progress: Progress | None = None,
    model: SpineModel | None = None,
) -> pd.DataFrame:
    """All measures of one subject as a tidy table (columns of :data:`spinekit.tables.COLUMNS`).

    Args:
        spine: vertebrae (VerSe labels), discs (100 + upper), canal (60) in one label map.
        image: the CT/MRI the labels belong to (for muscle intensity and CT fat fraction).
        muscles: muscle label map (spinekit numbering), any grid (sampled in physical space).
        fat, water: Dixon fat and water images for the muscle fat fraction.
        subject: subject identifier written to every row.
        progress: callback ``(fraction, message)``.
    """
    report = progress or (lambda _f, _m: None)
    if (fat is None) != (water is None):
        raise InputError("pass both the Dixon fat and water images (or neither)")
    if not any(lab.is_vertebra(int(v)) for v in np.unique(spine.array) if v > 0):
        raise LabelError(
            "the spine label map holds no vertebra labels (VerSe 1-28); convert TotalSegmentator/other labels "
            "first with `spinekit import-seg`"
        )
    report(0.0, "vertebra frames")
    model = model or build_spine_model(spine)
    rows: list[Measurement] = []
    report(0.3, "vertebral bodies")
    for v in model.order:
        rows.extend(body_measurements(model, v))
    rows.extend(spine_report_measurements(model))
    rows.extend(_level_rows(model))
    report(0.5, "discs")
    rows.extend(disc_measurements(model))
    report(0.6, "curvature")
    rows.extend(curvature_measurements(model))
    rows.extend(canal_measurements(model))
    frames = [to_frame(rows, subject)]
    if muscles is not None:
        report(0.7, "muscles")
        muscle_frame = muscle_cross_sections(muscles, spine, image, fat, water, model=model)
        muscle_frame["subject"] = subject
        frames.append(muscle_frame)
    report(1.0, "done")
    table = pd.concat(frames, ignore_index=True)[COLUMNS]
    table["reason"] = table["reason"].fillna("")
    return table


def centroids_lps(frames: dict[int, VertebraFrame]) -> dict[str, np.ndarray]:
    """Level name -> whole-vertebra centroid (LPS mm), for markups in the MRML layer."""
    return {frame.name: frame.centroid_lps for frame in frames.values()}
