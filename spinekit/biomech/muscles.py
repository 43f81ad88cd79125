"""Muscle fascicles of the model, personalised from the scan (Bruno et al. 2017 method).

Bruno AG, Mokhtarzadeh H, Allaire BT, et al. (2017) Incorporation of CT-based measurements of trunk anatomy into
subject-specific musculoskeletal models of the spine influences vertebral loading predictions. J Orthop Res
35:2164-2173: muscle cross-sectional areas set maximum forces and muscle centroid positions set lines of action.

- Geometry: each Christophy 2012 attachment (constants.CHRISTOPHY_FASCICLES) is expressed in the local frame of its
  generic body, scaled by that level's size ratio, and placed in the subject's body frame.
- Force: where a muscle group is labelled, its largest cross-sectional area over the lumbar levels (mm²) times the
  specific tension (constants.SPECIFIC_TENSION_N_PER_CM2) replaces the generic group force, split over the group's
  fascicles in the generic proportions. Unlabelled groups keep the generic force (flagged).
- Line of action: the mean offset between the measured muscle centroid and the model's fascicle centroid (both in the
  vertebra's frame, at the levels measured) shifts the group's attachment points, up to 20 mm (flagged when clipped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from spinekit.biomech import constants as C
from spinekit.labels import VERTEBRA_LABELS

log = logging.getLogger(__name__)

#: Largest shift (m) of a muscle group's line of action from the generic one.
MAX_SHIFT_M = 0.020
#: Range of the measured/generic force ratio accepted without a flag.
FORCE_RATIO_RANGE = (0.3, 3.0)


@dataclass(frozen=True)
class MuscleSpec:
    """One fascicle as built: points are (body, position in the model's neutral ground frame, m)."""

    name: str
    group: str
    side: str
    max_force: float
    optimal_fiber_length: float
    tendon_slack_length: float
    pennation: float
    points: tuple[tuple[str, np.ndarray], ...]


def generic_specs(geometry, generic_frames) -> list[MuscleSpec]:
    """Christophy fascicles (both sides) mapped onto the subject's body frames."""
    specs = []
    s = geometry.scale
    tension = C.SPECIFIC_TENSION_N_PER_CM2 / C.CHRISTOPHY_MAX_STRESS_N_PER_CM2
    for name, group, force, lopt, lslack, pen, points, _merged in C.CHRISTOPHY_FASCICLES:
        for side, mirror in (("right", 1.0), ("left", -1.0)):
            placed = []
            for body, x, y, z in points:
                p = np.array([x, y, z * mirror]) * s
                local = generic_frames[body].to_local(p) * geometry.level_scale.get(body, 1.0)
                placed.append((body, geometry.frames[body].to_ground(local)))
            specs.append(
                MuscleSpec(f"{name}_{side[0]}", group, side, force * tension, lopt * s, lslack * s, pen, tuple(placed))
            )
    return specs


def _section_centroid(spec_list: list[MuscleSpec], frame) -> np.ndarray | None:
    """Force-weighted mean of where the fascicles cross the transverse plane of ``frame`` (in its local frame)."""
    hits, weights = [], []
    for spec in spec_list:
        pts = [frame.to_local(p) for _b, p in spec.points]
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            if (a[1] <= 0 <= b[1] or b[1] <= 0 <= a[1]) and a[1] != b[1]:
                t = a[1] / (a[1] - b[1])
                hits.append(a + t * (b - a))
                weights.append(spec.max_force)
                break
    if not hits:
        return None
    return np.average(np.asarray(hits), axis=0, weights=weights)


def personalised_muscles(anatomy, geometry, generic_frames) -> tuple[list[MuscleSpec], list[str]]:
    """Fascicles with subject forces and lines of action where the scan measured them; returns (specs, flags)."""
    specs = generic_specs(geometry, generic_frames)
    flags: list[str] = []
    if not anatomy.muscles:
        return specs, flags
    measured_groups = sorted({(g, side) for g, side, _lv in anatomy.muscles})
    covered: set[tuple[str, str]] = set()
    for scan_group, side in measured_groups:
        model_groups = C.SCAN_TO_MODEL_GROUPS.get(scan_group)
        if model_groups is None:
            continue
        if scan_group == "autochthon" and any((g, side) in covered for g in model_groups):
            continue
        members = [s for s in specs if s.group in model_groups and s.side == side]
        sections = {lv: m for (g, sd, lv), m in anatomy.muscles.items() if g == scan_group and sd == side}
        csa_cm2 = max(m.csa_mm2 for m in sections.values()) / 100.0
        generic_force = sum(s.max_force for s in members)
        ratio = csa_cm2 * C.SPECIFIC_TENSION_N_PER_CM2 / generic_force
        if not FORCE_RATIO_RANGE[0] <= ratio <= FORCE_RATIO_RANGE[1]:
            flags.append(
                f"{scan_group} {side}: measured CSA {csa_cm2:.1f} cm² gives {ratio:.2f} x the generic force; "
                f"clipped to {FORCE_RATIO_RANGE}"
            )
            ratio = float(np.clip(ratio, *FORCE_RATIO_RANGE))
        shift = _line_of_action_shift(members, sections, geometry)
        if shift is not None and np.linalg.norm(shift) > MAX_SHIFT_M:
            flags.append(f"{scan_group} {side}: line-of-action shift {np.round(shift * 1000, 1)} mm clipped to 20 mm")
            shift = shift * MAX_SHIFT_M / np.linalg.norm(shift)
        names = {s.name for s in members}
        new = []
        for s in specs:
            if s.name not in names:
                new.append(s)
                continue
            points = s.points
            if shift is not None:
                points = tuple(
                    (b, p + geometry.frames[b].rotation @ shift) if b not in ("pelvis", "thorax") else (b, p)
                    for b, p in s.points
                )
            new.append(
                MuscleSpec(
                    s.name,
                    s.group,
                    s.side,
                    s.max_force * ratio,
                    s.optimal_fiber_length,
                    s.tendon_slack_length,
                    s.pennation,
                    points,
                )
            )
        specs = new
        covered.update((g, side) for g in model_groups)
    return specs, flags


def _line_of_action_shift(members: list[MuscleSpec], sections: dict, geometry) -> np.ndarray | None:
    """Mean (measured - model) centroid offset in the vertebra frames, anterior and lateral components only (m)."""
    offsets = []
    for level, measure in sections.items():
        body = level if level in geometry.frames and level.startswith("L") else None
        if body is None or VERTEBRA_LABELS.get(level) is None:
            continue
        frame = geometry.frames[body]
        model_c = _section_centroid(members, frame)
        if model_c is None:
            continue
        measured = frame.to_local(geometry.from_lps(measure.centroid_lps))
        delta = measured - model_c
        delta[1] = 0.0
        offsets.append(delta)
    if not offsets:
        return None
    return np.mean(offsets, axis=0)
