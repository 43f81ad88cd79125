"""Register a whole follow-up to its baseline, level by level, check each result and tabulate the change.

Levels present in both label maps are registered (:func:`register_vertebra`), judged (:mod:`.quality`) and measured
(:mod:`.changes`); levels present in one scan only are reported and skipped. The table is tidy (``spinekit.tables``):
registration diagnostics (``rotation``, ``translation``, ``residual_surface_distance``, ``registration_ok``) sit
beside the change measures, and a flagged registration turns its level's change values into NaN with the flags as
the reason, so a doubtful number is never silently reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import SimpleITK as sitk

from spinekit.errors import InputError
from spinekit.io import Volume
from spinekit.labels import CRANIOCAUDAL_ORDER, VERTEBRA_NAMES, is_vertebra
from spinekit.register.body import BaselineBody, baseline_bodies
from spinekit.register.changemap import ChangeMapConfig, ChangeMaps, change_map_rows, vertebra_change_maps
from spinekit.register.changes import level_changes
from spinekit.register.geometry import transform_points
from spinekit.register.quality import QualityReport, QualityThresholds, assess_all, level_shift, level_shift_flag
from spinekit.register.vertebra import RegistrationConfig, VertebraRegistration, register_vertebra
from spinekit.tables import Measurement, missing, to_frame

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


@dataclass
class SpineRegistration:
    """Everything the whole-subject registration produced.

    Attributes:
        registrations: per level, the rigid registration (baseline point -> follow-up point).
        quality: per level, the quality report (``ok`` False when flagged).
        skipped: level -> reason for levels that were not registered.
        table: tidy change table (one row per level x metric, plus skipped levels with their reason).
        body_masks / frames: the baseline bodies and frames used for the heights.
        change_maps: per level, the deformable stage's Jacobian and intensity-difference maps (when asked for).
    """

    registrations: dict[int, VertebraRegistration]
    quality: dict[int, QualityReport]
    skipped: dict[int, str]
    table: pd.DataFrame
    body_masks: dict[int, np.ndarray] = field(default_factory=dict)
    frames: dict = field(default_factory=dict)
    change_maps: dict[int, ChangeMaps] = field(default_factory=dict)


def vertebra_levels(spine: Volume) -> list[int]:
    """Vertebra labels present in a label map, cranial to caudal."""
    present = {int(v) for v in np.unique(spine.array) if is_vertebra(int(v))}
    return [v for v in CRANIOCAUDAL_ORDER if v in present]


def centroids_lps(spine: Volume, levels: Iterable[int]) -> dict[int, np.ndarray]:
    """Physical centroid (LPS mm) of each level."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(spine.to_sitk(), sitk.sitkUInt16))
    return {v: np.asarray(stats.GetCentroid(v)) for v in levels if stats.HasLabel(v)}


def register_spines(
    baseline_spine: Volume,
    followup_spine: Volume,
    *,
    baseline_image: Volume | None = None,
    followup_image: Volume | None = None,
    baseline_lesions: Volume | None = None,
    followup_lesions: Volume | None = None,
    levels: Iterable[int] | None = None,
    config: RegistrationConfig | None = None,
    thresholds: QualityThresholds | None = None,
    calibration=None,
    intensity_reason: str = "",
    subject: str = "",
    change_maps: bool | ChangeMapConfig = False,
    progress: Progress | None = None,
) -> SpineRegistration:
    """Register every level present in both scans and measure its change.

    Args:
        baseline_spine / followup_spine: vertebra label maps (VerSe), any grids.
        baseline_image / followup_image: images for intensity change (optional).
        baseline_lesions / followup_lesions: lesion maps (optional).
        levels: restrict to these levels.
        config / thresholds: registration settings and quality limits.
        calibration: HU -> vBMD calibration with ``vbmd(hu)`` (optional).
        intensity_reason: why intensities must not be compared (e.g. different modalities); empty if they can.
        subject: subject id for the table.
        change_maps: also run the deformable stage per level and make its maps (:mod:`.changemap`); a
            :class:`ChangeMapConfig` sets it up. Flagged levels get none.
        progress: callback (fraction done, message).

    Raises:
        InputError: when either label map holds no vertebra.
    """
    base_levels = vertebra_levels(baseline_spine)
    follow_levels = vertebra_levels(followup_spine)
    if not base_levels:
        raise InputError("the baseline label map holds no vertebra (VerSe labels 1-28); check --baseline-spine")
    if not follow_levels:
        raise InputError(
            "the follow-up label map holds no vertebra (VerSe labels 1-28): the follow-up mask is empty; "
            "check --followup-spine or its segmentation"
        )
    wanted = set(levels) if levels is not None else set(base_levels) | set(follow_levels)
    skipped: dict[int, str] = {}
    for v in sorted(wanted, key=_order):
        if v in base_levels and v not in follow_levels:
            skipped[v] = "present in the baseline only (outside the follow-up field of view or not segmented)"
        elif v in follow_levels and v not in base_levels:
            skipped[v] = "present in the follow-up only (outside the baseline field of view or not segmented)"
        elif v not in base_levels:
            skipped[v] = "in neither scan"
    todo = [v for v in base_levels if v in follow_levels and v in wanted]
    bodies = _bodies(baseline_spine, todo)
    frames = {label: body.frame for label, body in bodies.items()}
    body_masks = {label: body.mask for label, body in bodies.items() if body.mask is not None}
    registrations: dict[int, VertebraRegistration] = {}
    for index, label in enumerate(todo):
        if progress:
            progress(index / max(len(todo), 1), f"registering {VERTEBRA_NAMES[label]}")
        body = body_masks.get(label)
        try:
            registrations[label] = register_vertebra(
                baseline_spine, followup_spine, label, config=config, body_mask=body
            )
        except (InputError, RuntimeError) as exc:
            skipped[label] = f"registration failed: {exc}"
    voxel = max(max(baseline_spine.spacing), max(followup_spine.spacing))
    quality = assess_all(
        registrations,
        centroids_lps(baseline_spine, base_levels),
        centroids_lps(followup_spine, follow_levels),
        voxel_mm=voxel,
        thresholds=thresholds,
    )
    shift_flag = level_shift_flag(*level_shift(baseline_spine, followup_spine, thresholds))
    if shift_flag:
        log.warning(shift_flag)
        for report in quality.values():
            report.flags.append(shift_flag)
    rows: list[Measurement] = []
    maps: dict[int, ChangeMaps] = {}
    for label, registration in registrations.items():
        report = quality[label]
        rows.extend(_registration_rows(registration, report))
        level_rows = level_changes(
            baseline_spine,
            followup_spine,
            label,
            registration.transform,
            body=bodies.get(label),
            baseline_image=baseline_image,
            followup_image=followup_image,
            baseline_lesions=baseline_lesions,
            followup_lesions=followup_lesions,
            calibration=calibration,
            intensity_reason=intensity_reason,
        )
        if change_maps and report.ok:
            config_maps = change_maps if isinstance(change_maps, ChangeMapConfig) else None
            try:
                maps[label] = vertebra_change_maps(
                    baseline_spine, followup_spine, label, registration.transform,
                    baseline_image=baseline_image, followup_image=followup_image,
                    intensity_reason=intensity_reason, config=config_maps,
                )  # fmt: skip
                level_rows.extend(change_map_rows(maps[label], baseline_spine, body_masks.get(label)))
            except InputError as exc:
                log.warning("no change maps for %s: %s", VERTEBRA_NAMES.get(label), exc)
        if not report.ok:
            level_rows = [
                missing(r.structure, r.label, r.metric, r.unit, r.method, f"registration flagged: {report.reason}")
                for r in level_rows
            ]
        rows.extend(level_rows)
    for label, reason in skipped.items():
        rows.append(missing(VERTEBRA_NAMES.get(label, str(label)), label, "registration_ok", "bool", "skipped", reason))
    table = to_frame(rows, subject=subject)
    table = table.sort_values(by="label", key=lambda s: s.map(_order), kind="stable").reset_index(drop=True)
    if progress:
        progress(1.0, "done")
    return SpineRegistration(registrations, quality, skipped, table, body_masks, frames, maps)


def _order(label: int) -> int:
    return CRANIOCAUDAL_ORDER.index(label) if label in CRANIOCAUDAL_ORDER else 999


def _bodies(spine: Volume, levels: list[int]) -> dict[int, BaselineBody]:
    try:
        return baseline_bodies(spine, levels)
    except Exception as exc:  # noqa: BLE001 - heights become NaN with this reason, registration still runs
        log.warning("vertebra frames and bodies unavailable (%s); heights will be NaN", exc)
        return {}


def _registration_rows(registration: VertebraRegistration, report: QualityReport) -> list[Measurement]:
    name = registration.name
    label = registration.label
    method = f"segmentation distance maps, rigid ({registration.details.get('strategy', '')})"
    centre = np.asarray(registration.transform.GetCenter())
    shift = float(np.linalg.norm(transform_points(registration.transform, centre[None, :])[0] - centre))
    rows = [
        Measurement(name, label, "registration_ok", float(report.ok), "bool", method, report.reason),
        Measurement(name, label, "rotation", report.rotation_deg, "deg", method),
        Measurement(name, label, "translation", shift, "mm", method + "; displacement of the baseline centroid"),
        Measurement(name, label, "residual_surface_distance", report.residual_mean_mm, "mm", method),
        Measurement(name, label, "residual_surface_distance_p95", report.residual_p95_mm, "mm", method),
        Measurement(name, label, "changed_surface_fraction", 100 * report.changed_fraction, "%", method),
        Measurement(name, label, "registration_time", registration.seconds, "s", method),
    ]
    return [r if math.isfinite(r.value) else missing(name, label, r.metric, r.unit, r.method, "not computed")
            for r in rows]  # fmt: skip
