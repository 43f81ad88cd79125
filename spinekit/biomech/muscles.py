"""Muscle fascicles of the model, personalised from the scan (Bruno et al. 2017 method).

Bruno AG, Mokhtarzadeh H, Allaire BT, et al. (2017) Incorporation of CT-based measurements of trunk anatomy into
subject-specific musculoskeletal models of the spine influences vertebral loading predictions. J Orthop Res
35:2164-2173: muscle cross-sectional areas set maximum forces and muscle centroid positions set lines of action.

- Geometry: each Christophy 2012 attachment (constants.CHRISTOPHY_FASCICLES) is expressed in the local frame of its
  generic body, scaled by that level's size ratio, and placed in the subject's body frame.
- Force, level by level: a scan section at one vertebral level cuts only the fascicles that pass that level, so it
  is compared with the model's own cross-section there, the summed PCSA (generic force / specific tension) of the
  group's fascicles crossing the same transverse plane (the model-CSA-per-plane comparison of Bruno AG, Bouxsein ML,
  Anderson DE (2015) J Biomech Eng 137:081003, Fig. 2: "Method for calculating muscle group CSA and moment arm in the
  model at different transverse planes"). Each level gives a ratio measured / model; the group's generic forces are
  multiplied by the MEDIAN ratio over the levels where the model has at least MIN_LEVEL_COVERAGE of its largest
  section (a median, so one contaminated section, e.g. TotalSegmentator's "iliopsoas" taking in the iliacus at L5,
  does not set the force; such outliers are flagged). Comparing the largest section with the group's TOTAL force
  instead, as the first version did, counts fascicles that no single section contains (thoracic and short lumbar
  fascicles) and gave 0.6 x the generic extensor force for normal-sized CT muscles.
- Obliquity: a section normal to the vertebra's axis cuts a muscle running at an angle to it obliquely, which
  inflates the area by 1 / cos(angle). The measured area is multiplied by cos(angle between the section normal and
  the muscle's centroid path through the neighbouring levels), the correction for fibre orientation of McGill SM,
  Santaguida L, Stevens J (1993) Measurement of the trunk musculature from T5 to L5 using MRI scans of 15 young males
  corrected for muscle fibre orientation. Clin Biomech 8:171-178 (their title and abstract; estimating the fibre
  direction from the centroid path is our assumption). Angles beyond MAX_OBLIQUITY_DEG are not corrected beyond it.
- Specific tension appears once: generic forces are Bogduk PCSA x constants.SPECIFIC_TENSION_N_PER_CM2, and the
  subject's force of a group is its generic force x (measured CSA / model PCSA), i.e. measured CSA x that tension.
- Unlabelled groups keep the generic force (flagged).
- Line of action: the median offset between the measured muscle centroid and the model's fascicle centroid (both in
  the vertebra's frame, at the levels measured) shifts the group's attachment points, up to 20 mm (flagged when
  clipped).
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
#: A level takes part in the force ratio when the model's section there holds at least this share of the group's
#: largest section (levels the model barely reaches give ill-conditioned ratios).
MIN_LEVEL_COVERAGE = 0.25
#: Largest muscle obliquity (deg) to a section plane that is corrected for (beyond it the centroid path is suspect).
MAX_OBLIQUITY_DEG = 40.0
#: A level whose ratio differs from the group's median by more than this factor is reported as an outlier.
OUTLIER_FACTOR = 1.8


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


def _crossings(spec: MuscleSpec, frame) -> np.ndarray | None:
    """Where a fascicle first crosses the transverse plane (local y = 0) of ``frame``, in that frame; None if never."""
    pts = [frame.to_local(p) for _b, p in spec.points]
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        if (a[1] <= 0 <= b[1] or b[1] <= 0 <= a[1]) and a[1] != b[1]:
            t = a[1] / (a[1] - b[1])
            return a + t * (b - a)
    return None


def _section_centroid(spec_list: list[MuscleSpec], frame) -> np.ndarray | None:
    """Force-weighted mean of where the fascicles cross the transverse plane of ``frame`` (in its local frame)."""
    hits, weights = [], []
    for spec in spec_list:
        hit = _crossings(spec, frame)
        if hit is not None:
            hits.append(hit)
            weights.append(spec.max_force)
    if not hits:
        return None
    return np.average(np.asarray(hits), axis=0, weights=weights)


def crossing_force(spec_list: list[MuscleSpec], frame) -> float:
    """Summed maximum force (N) of the fascicles crossing the transverse plane of ``frame``: the model's section."""
    return float(sum(s.max_force for s in spec_list if _crossings(s, frame) is not None))


def perpendicular_csa(sections: dict, vertebrae: dict) -> tuple[dict[str, float], list[str]]:
    """Measured areas (mm², per level name) corrected to the plane perpendicular to the muscle (module docstring).

    ``sections``: level name -> MuscleMeasure; ``vertebrae``: VerSe label -> VertebraGeometry (LPS). The muscle
    direction at a level is the centroid path through its neighbouring measured levels (one-sided at the ends);
    a single level is left as measured. Returns (areas, notes on clipped angles).
    """
    order = sorted((lv for lv in sections if VERTEBRA_LABELS.get(lv) in vertebrae), key=lambda lv: VERTEBRA_LABELS[lv])
    areas = {lv: float(m.csa_mm2) for lv, m in sections.items()}
    notes = []
    if len(order) < 2:
        return areas, notes
    centroids = [np.asarray(sections[lv].centroid_lps, float) for lv in order]
    for i, level in enumerate(order):
        upper = centroids[max(i - 1, 0)]  # lower label = more cranial
        lower = centroids[min(i + 1, len(order) - 1)]
        path = upper - lower
        if np.linalg.norm(path) < 1e-6:
            continue
        normal = np.asarray(vertebrae[VERTEBRA_LABELS[level]].superior, float)
        cos = abs(float(np.dot(path / np.linalg.norm(path), normal / np.linalg.norm(normal))))
        limit = np.cos(np.radians(MAX_OBLIQUITY_DEG))
        if cos < limit:
            notes.append(f"{level}: muscle {np.degrees(np.arccos(cos)):.0f} deg oblique to the section")
            cos = limit
        areas[level] *= cos
    return areas, notes


def level_force_ratios(
    members: list[MuscleSpec], sections: dict, geometry, vertebrae: dict
) -> tuple[dict[str, tuple[float, float, float]], list[str]]:
    """Per measured level: (measured perpendicular CSA cm², model section PCSA cm², ratio), usable levels only.

    The model's PCSA at a level is :func:`crossing_force` / constants.SPECIFIC_TENSION_N_PER_CM2 (the generic forces
    are PCSA x that tension). Levels where the model's section is under MIN_LEVEL_COVERAGE of its largest are left
    out. Returns (ratios, notes).
    """
    areas, notes = perpendicular_csa(sections, vertebrae)
    model = {
        lv: crossing_force(members, geometry.frames[lv]) / C.SPECIFIC_TENSION_N_PER_CM2
        for lv in areas
        if lv in geometry.frames and lv.startswith("L")
    }
    largest = max(model.values(), default=0.0)
    out = {}
    for lv, pcsa in model.items():
        if largest <= 0 or pcsa < MIN_LEVEL_COVERAGE * largest:
            continue
        out[lv] = (areas[lv] / 100.0, pcsa, areas[lv] / 100.0 / pcsa)
    return out, notes


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
        levels, notes = level_force_ratios(members, sections, geometry, anatomy.vertebrae)
        flags += [f"{scan_group} {side} {n}; obliquity correction capped at {MAX_OBLIQUITY_DEG:.0f} deg" for n in notes]
        if not levels:
            flags.append(f"{scan_group} {side}: no section where the model's fascicles pass; generic force kept")
            covered.update((g, side) for g in model_groups)
            continue
        ratio = float(np.median([r for _a, _m, r in levels.values()]))
        outliers = [lv for lv, (_a, _m, r) in levels.items() if not 1 / OUTLIER_FACTOR <= r / ratio <= OUTLIER_FACTOR]
        if outliers:
            listed = "; ".join(f"{lv} {levels[lv][0]:.1f} cm² vs model {levels[lv][1]:.1f} cm²" for lv in outliers)
            flags.append(
                f"{scan_group} {side}: sections out of line with the others ({listed}), "
                f"left to the median ratio {ratio:.2f} and out of the line of action"
            )
        if not FORCE_RATIO_RANGE[0] <= ratio <= FORCE_RATIO_RANGE[1]:
            flags.append(
                f"{scan_group} {side}: measured sections give {ratio:.2f} x the generic force; "
                f"clipped to {FORCE_RATIO_RANGE}"
            )
            ratio = float(np.clip(ratio, *FORCE_RATIO_RANGE))
        kept = {lv: m for lv, m in sections.items() if lv in levels and lv not in outliers}
        shift = _line_of_action_shift(members, kept or sections, geometry)
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
    """Median (measured - model) centroid offset in the vertebra frames, anterior and lateral components only (m)."""
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
    return np.median(offsets, axis=0)
