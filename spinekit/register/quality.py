"""Is a per-vertebra registration trustworthy? Residual surface distance, transform size, neighbour consistency.

A registration is never returned silently: each level gets a :class:`QualityReport` whose ``flags`` name what is
wrong (``ok`` is False when any flag is raised). The checks:

* residual: mean distance from the fitted baseline surface to the follow-up surface after alignment, above
  ``max(residual_mean_mm, residual_voxel_factor x voxel size)``: the shapes do not match (divergence, wrong level);
* changed: more than ``max_changed_fraction`` of the surface disagrees (not a collapse: nothing is left to fit);
* rotation / deviation: a rotation above ``max_rotation_deg`` or a displacement of the vertebra's centroid that
  differs from the spine-wide median displacement by more than ``max_deviation_mm``; between two scans of the same
  patient the vertebrae move together up to intersegmental motion (lumbar flexion-extension range of motion about
  10-15 deg per level, Pearcy et al. 1984, Spine 9:294, Table 1), so larger values mean a wrong initialisation or
  a label mix-up;
* neighbours: the level's transform must carry the baseline centroids of its neighbours closest to the follow-up
  centroids of the same neighbours; swapped labels break this;
* level shift: when every follow-up label is off by one level, the neighbour check still passes (the neighbours are
  shifted too). :func:`level_shift` compares per-level shape descriptors (volume and the three principal extents,
  which grow caudally by about 5-10 % per lumbar level: Zhou et al. 2000, Eur Spine J 9:242, Table 1) of baseline
  level v with follow-up level v, v - 1 and v + 1; a shifted match that fits clearly better flags every level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from spinekit.io import Volume
from spinekit.labels import CRANIOCAUDAL_ORDER, VERTEBRA_NAMES, is_vertebra
from spinekit.register.geometry import rotation_angle_deg, transform_points
from spinekit.register.vertebra import VertebraRegistration


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of a plausible registration (see the module docstring for their sources).

    ``shift_*``: labels are called shifted when a ±1 shift has at most ``shift_ratio`` of the as-labelled descriptor
    mismatch, the as-labelled mismatch is above ``shift_min_mismatch`` (3 %, the scan-to-scan variation of a
    vertebra's segmented volume) and at least ``shift_min_levels`` levels overlap under the shift.
    """

    residual_mean_mm: float = 1.0
    residual_voxel_factor: float = 0.8
    residual_p95_mm: float = 3.0
    max_changed_fraction: float = 0.5
    max_rotation_deg: float = 20.0
    max_deviation_mm: float = 25.0
    shift_ratio: float = 0.5
    shift_min_mismatch: float = 0.03
    shift_min_levels: int = 3


@dataclass
class QualityReport:
    """Quality of one level's registration; ``flags`` hold human-readable reasons, empty when plausible."""

    label: int
    residual_mean_mm: float
    residual_p95_mm: float
    changed_fraction: float
    rotation_deg: float
    displacement_mm: float
    deviation_mm: float
    flags: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.flags

    @property
    def reason(self) -> str:
        return "; ".join(self.flags)


def assess_registration(
    registration: VertebraRegistration,
    baseline_centroid_lps: np.ndarray,
    *,
    spine_displacement_mm: np.ndarray | None = None,
    voxel_mm: float = 1.0,
    thresholds: QualityThresholds | None = None,
) -> QualityReport:
    """Residual and transform-size checks of one level.

    Args:
        registration: the result of :func:`spinekit.register.vertebra.register_vertebra`.
        baseline_centroid_lps: the level's baseline centroid (where its displacement is measured).
        spine_displacement_mm: median centroid displacement over all levels (None: no deviation check).
        voxel_mm: largest voxel size of the two scans (the residual limit scales with it).
        thresholds: limits.
    """
    thresholds = thresholds or QualityThresholds()
    centroid = np.asarray(baseline_centroid_lps, dtype=float)
    moved = transform_points(registration.transform, centroid[None, :])[0]
    displacement = moved - centroid
    deviation = (
        float(np.linalg.norm(displacement - np.asarray(spine_displacement_mm)))
        if spine_displacement_mm is not None
        else float("nan")
    )
    report = QualityReport(
        label=registration.label,
        residual_mean_mm=registration.residual_mean_mm,
        residual_p95_mm=registration.residual_p95_mm,
        changed_fraction=registration.changed_fraction,
        rotation_deg=rotation_angle_deg(registration.transform),
        displacement_mm=float(np.linalg.norm(displacement)),
        deviation_mm=deviation,
    )
    limit = max(thresholds.residual_mean_mm, thresholds.residual_voxel_factor * voxel_mm)
    if not np.isfinite(report.residual_mean_mm) or report.residual_mean_mm > limit:
        report.flags.append(f"residual surface distance {report.residual_mean_mm:.2f} mm > {limit:.2f} mm")
    elif report.residual_p95_mm > max(thresholds.residual_p95_mm, 2.5 * voxel_mm):
        report.flags.append(f"95th percentile surface distance {report.residual_p95_mm:.2f} mm is too large")
    if report.changed_fraction > thresholds.max_changed_fraction:
        report.flags.append(f"{100 * report.changed_fraction:.0f}% of the surface disagrees after alignment")
    if report.rotation_deg > thresholds.max_rotation_deg:
        report.flags.append(f"rotation {report.rotation_deg:.1f} deg > {thresholds.max_rotation_deg:.0f} deg")
    if np.isfinite(deviation) and deviation > thresholds.max_deviation_mm:
        report.flags.append(
            f"moves {deviation:.1f} mm differently from the rest of the spine (> {thresholds.max_deviation_mm:.0f} mm)"
        )
    return report


def neighbour_flags(
    registration: VertebraRegistration,
    baseline_centroids: Mapping[int, np.ndarray],
    followup_centroids: Mapping[int, np.ndarray],
) -> list[str]:
    """Flags when the level's transform carries a neighbour's baseline centroid nearer another follow-up level."""
    flags = []
    label = registration.label
    order = [v for v in CRANIOCAUDAL_ORDER if v in baseline_centroids]
    if label not in order or len(followup_centroids) < 2:
        return flags
    position = order.index(label)
    neighbours = [order[i] for i in (position - 1, position + 1) if 0 <= i < len(order)]
    follow_labels = list(followup_centroids)
    follow_points = np.array([followup_centroids[v] for v in follow_labels])
    for neighbour in neighbours:
        if neighbour not in followup_centroids:
            continue
        mapped = transform_points(registration.transform, np.asarray(baseline_centroids[neighbour])[None, :])[0]
        nearest = follow_labels[int(np.argmin(np.linalg.norm(follow_points - mapped, axis=1)))]
        if nearest != neighbour:
            flags.append(
                f"its transform puts baseline {VERTEBRA_NAMES.get(neighbour)} on follow-up "
                f"{VERTEBRA_NAMES.get(nearest)}: level labels of the two scans disagree"
            )
    return flags


def assess_all(
    registrations: Mapping[int, VertebraRegistration],
    baseline_centroids: Mapping[int, np.ndarray],
    followup_centroids: Mapping[int, np.ndarray],
    *,
    voxel_mm: float = 1.0,
    thresholds: QualityThresholds | None = None,
) -> dict[int, QualityReport]:
    """Quality of every level, with the spine-wide deviation and neighbour checks."""
    displacements = [
        transform_points(reg.transform, np.asarray(baseline_centroids[v])[None, :])[0] - baseline_centroids[v]
        for v, reg in registrations.items()
    ]
    median = np.median(np.array(displacements), axis=0) if len(displacements) >= 3 else None
    reports = {}
    for label, registration in registrations.items():
        report = assess_registration(
            registration,
            baseline_centroids[label],
            spine_displacement_mm=median,
            voxel_mm=voxel_mm,
            thresholds=thresholds,
        )
        report.flags.extend(neighbour_flags(registration, baseline_centroids, followup_centroids))
        reports[label] = report
    return reports


def shape_descriptors(spine: Volume) -> dict[int, np.ndarray]:
    """Per vertebra: log of volume (mm^3) and of the three principal extents (sqrt of principal moments, mm)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(spine.to_sitk(), sitk.sitkUInt16))
    out = {}
    for label in stats.GetLabels():
        if not is_vertebra(int(label)):
            continue
        moments = np.clip(np.asarray(stats.GetPrincipalMoments(label)), 1e-6, None)
        out[int(label)] = np.log(np.r_[stats.GetPhysicalSize(label), np.sqrt(moments)])
    return out


def level_shift(
    baseline_spine: Volume, followup_spine: Volume, thresholds: QualityThresholds | None = None
) -> tuple[int, dict[int, float]]:
    """The level shift (follow-up position - baseline position, in vertebrae) that best matches the shapes.

    Returns ``(shift, mismatch)`` where ``mismatch[s]`` is the median over overlapping levels of the mean absolute
    log-ratio of the descriptors (about the relative difference) under shift ``s``; ``shift`` is 0 unless a ±1
    shift is clearly better (see :class:`QualityThresholds`). The median keeps one collapsed level from deciding.
    """
    thresholds = thresholds or QualityThresholds()
    base = shape_descriptors(baseline_spine)
    follow = shape_descriptors(followup_spine)
    order = CRANIOCAUDAL_ORDER
    mismatch: dict[int, float] = {}
    for shift in (-1, 0, 1):
        values = []
        for label, descriptor in base.items():
            if label not in order:
                continue
            position = order.index(label) + shift
            if 0 <= position < len(order) and order[position] in follow:
                values.append(float(np.mean(np.abs(descriptor - follow[order[position]]))))
        if len(values) >= thresholds.shift_min_levels:
            mismatch[shift] = float(np.median(values))
    if 0 not in mismatch or mismatch[0] <= thresholds.shift_min_mismatch:
        return 0, mismatch
    best = min((s for s in mismatch if s != 0), key=lambda s: mismatch[s], default=0)
    if best != 0 and mismatch[best] <= thresholds.shift_ratio * mismatch[0]:
        return best, mismatch
    return 0, mismatch


def level_shift_flag(shift: int, mismatch: Mapping[int, float]) -> str:
    """Human-readable flag for a detected level shift (empty when ``shift`` is 0)."""
    if shift == 0:
        return ""
    direction = "caudally" if shift > 0 else "cranially"
    return (
        f"follow-up level labels look shifted by one level {direction}: shapes differ by "
        f"{100 * mismatch[0]:.0f}% as labelled and {100 * mismatch[shift]:.0f}% under the shift; relabel the follow-up"
    )
