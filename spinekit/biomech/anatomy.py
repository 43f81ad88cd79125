"""The subject's anatomy as the model builder needs it: vertebral frames, body sizes, muscle areas.

Everything here is patient LPS millimetres; :func:`lps_to_opensim` is the one conversion to OpenSim's frame
(X anterior, Y superior, Z right, metres): ``X = -y_lps, Y = z_lps, Z = -x_lps``, divided by 1000.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from spinekit import labels as lab
from spinekit.biomech import constants as C
from spinekit.errors import InputError
from spinekit.io import Volume

log = logging.getLogger(__name__)

LUMBAR = (20, 21, 22, 23, 24)
T12 = 19
#: Plausible adult ranges; outside them the input is refused (a typo such as 1.75 for cm or 750 for kg).
HEIGHT_RANGE_CM = (120.0, 220.0)
WEIGHT_RANGE_KG = (30.0, 250.0)
BMI_RANGE = (12.0, 60.0)
AGE_RANGE = (18.0, 110.0)
#: Slab thickness (mm) for cross-sectional areas through a vertebral body centroid; at least three voxels thick
#: (``slab_mm``) so that the voxel count in the slab does not alias with the slice positions.
SLAB_MM = 4.0
#: Depth (mm) peeled off the body surface to sample trabecular bone only (clears the ~0.5 mm shell and partial volume).
TRABECULAR_INSET_MM = 3.0


def lps_to_opensim(points_lps: np.ndarray) -> np.ndarray:
    """LPS mm ``(..., 3)`` to OpenSim metres (X anterior, Y superior, Z right)."""
    p = np.asarray(points_lps, dtype=float)
    return np.stack([-p[..., 1], p[..., 2], -p[..., 0]], axis=-1) / 1000.0


def opensim_to_lps(points_m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lps_to_opensim`."""
    p = np.asarray(points_m, dtype=float) * 1000.0
    return np.stack([-p[..., 2], -p[..., 0], p[..., 1]], axis=-1)


def dir_lps_to_opensim(vectors: np.ndarray) -> np.ndarray:
    """Directions (unit vectors) LPS to OpenSim axes, no scaling."""
    v = np.asarray(vectors, dtype=float)
    return np.stack([-v[..., 1], v[..., 2], -v[..., 0]], axis=-1)


@dataclass(frozen=True)
class VertebraGeometry:
    """Body centroid (LPS mm) and unit superior/anterior axes (LPS) of one vertebra."""

    centroid_lps: np.ndarray
    superior: np.ndarray
    anterior: np.ndarray


@dataclass(frozen=True)
class BodyMeasure:
    """Vertebral body: mid-height cross-sectional area (mm²), trabecular HU, vBMD (mg/cm³), lytic fraction."""

    csa_mm2: float = math.nan
    trabecular_hu: float = math.nan
    vbmd_mg_cm3: float = math.nan
    lesion_fraction: float = 0.0


@dataclass(frozen=True)
class MuscleMeasure:
    """Muscle cross-section at one vertebral level: area (mm²) and centroid (LPS mm)."""

    csa_mm2: float
    centroid_lps: np.ndarray


@dataclass(frozen=True)
class SubjectAnatomy:
    """What the model builder needs of one subject.

    Attributes:
        sex: "male" or "female".
        age: years.
        height_cm, weight_kg: stature and body mass.
        vertebrae: VerSe label -> :class:`VertebraGeometry` (lumbar L1-L5 required in part, T12/S1 optional).
        bodies: VerSe label -> :class:`BodyMeasure`.
        muscles: (scan group, side, level name) -> :class:`MuscleMeasure`.
        flags: every fallback used, in words.
        modality: "CT", "MRI" or "" (generic / unknown).
        subject: identifier written into tables.
    """

    sex: str
    age: float
    height_cm: float
    weight_kg: float
    vertebrae: dict[int, VertebraGeometry]
    bodies: dict[int, BodyMeasure] = field(default_factory=dict)
    muscles: dict[tuple[str, str, str], MuscleMeasure] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    modality: str = ""
    subject: str = ""


def check_subject(sex: str, age: float, height_cm: float, weight_kg: float) -> str:
    """Validate the anthropometry; returns the normalised sex. Raises :class:`InputError` on absurd values."""
    sex_norm = str(sex).strip().lower()
    sex_norm = {"m": "male", "f": "female"}.get(sex_norm, sex_norm)
    if sex_norm not in ("male", "female"):
        raise InputError(f"sex must be 'male' or 'female', not {sex!r}")
    for name, val, (low, high), unit in (
        ("height", height_cm, HEIGHT_RANGE_CM, "cm"),
        ("weight", weight_kg, WEIGHT_RANGE_KG, "kg"),
        ("age", age, AGE_RANGE, "years"),
    ):
        if not np.isfinite(val) or not low <= val <= high:
            raise InputError(
                f"{name} {val} {unit} is outside the plausible adult range {low}-{high} {unit}; "
                f"check the unit (height in cm, weight in kg) and pass --{name if name != 'height' else 'height-cm'}"
            )
    bmi = weight_kg / (height_cm / 100.0) ** 2
    if not BMI_RANGE[0] <= bmi <= BMI_RANGE[1]:
        raise InputError(
            f"height {height_cm} cm with weight {weight_kg} kg gives BMI {bmi:.1f}, outside {BMI_RANGE}; "
            "one of the two is probably wrong"
        )
    return sex_norm


def generic_vertebrae(sex: str, height_cm: float) -> dict[int, VertebraGeometry]:
    """L1-L5 (and S1) placed from the Christophy 2012 joint centres, scaled to stature.

    The body centroid of a level is the midpoint of the joint centres below and above it, its superior axis the
    direction between them (Christophy's bodies are not tilted; lordosis is in the joint offsets), its anterior
    axis the sagittal perpendicular. The model's sacrum origin is placed at LPS (0, 0, 0).
    """
    scale = height_cm / 100.0 / C.REFERENCE_STATURE_M[sex]
    order = ["L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2"]
    joints = [np.asarray(C.CHRISTOPHY_JOINT_CENTRES_M[j]) * scale for j in order]
    top_axis = joints[-1] - joints[-2]
    top_axis /= np.linalg.norm(top_axis)
    joints.append(joints[-1] + top_axis * C.CHRISTOPHY_MEAN_JOINT_SPACING_M * scale)  # T12/L1
    out: dict[int, VertebraGeometry] = {}
    for index, label in enumerate((24, 23, 22, 21, 20)):
        lower, upper = joints[index], joints[index + 1]
        sup = (upper - lower) / np.linalg.norm(upper - lower)
        ant = np.array([1.0, 0.0, 0.0]) - sup[0] * sup
        ant /= np.linalg.norm(ant)
        out[label] = VertebraGeometry(
            opensim_to_lps((lower + upper) / 2.0), dir_lps_to_opensim_inv(sup), dir_lps_to_opensim_inv(ant)
        )
    return out


def dir_lps_to_opensim_inv(vector_osim: np.ndarray) -> np.ndarray:
    """OpenSim direction to LPS direction."""
    v = np.asarray(vector_osim, dtype=float)
    return np.array([-v[2], -v[0], v[1]])


def generic_anatomy(sex: str, height_cm: float, weight_kg: float, age: float = 50.0) -> SubjectAnatomy:
    """Literature-default anatomy (Christophy 2012 geometry scaled to stature); every measure flagged generic."""
    sex = check_subject(sex, age, height_cm, weight_kg)
    return SubjectAnatomy(
        sex=sex,
        age=age,
        height_cm=height_cm,
        weight_kg=weight_kg,
        vertebrae=generic_vertebrae(sex, height_cm),
        flags=("generic anatomy: Christophy 2012 geometry scaled to stature, no scan measures",),
        subject="generic",
    )


def slab_mm(volume: Volume) -> float:
    """Slab thickness for areas on this grid: SLAB_MM or three of its thickest voxels."""
    return max(SLAB_MM, 3.0 * max(volume.spacing))


def _slab(points: np.ndarray, centre: np.ndarray, normal: np.ndarray, half: float) -> np.ndarray:
    return np.abs((points - centre) @ normal) <= half


def _muscle_sections(
    muscles: Volume, spine: Volume, frames: dict, levels: list[int]
) -> tuple[dict[tuple[str, str, str], MuscleMeasure], list[str]]:
    """CSA and 2D centroid of each muscle label on the mid-height plane of each lumbar level.

    Delegates to :func:`spinekit.morphometry.muscles.muscle_cross_sections` (one implementation of muscle sections
    in the project): plane through the vertebral body centroid normal to the body's superior axis, label map
    resampled on the plane at 0.5 mm. Sections that the morphometry marks NaN (muscle reaching the image border,
    label absent) are left out and flagged.
    """
    from spinekit.morphometry.context import SpineModel
    from spinekit.morphometry.muscles import muscle_cross_sections

    subset = {v: frames[v] for v in levels}
    table = muscle_cross_sections(muscles, spine, model=SpineModel(spine, subset, list(levels)))
    names = {lab.VERTEBRA_NAMES[v] for v in levels}
    out: dict[tuple[str, str, str], MuscleMeasure] = {}
    flags: list[str] = []
    for value, rows in table.groupby("label"):
        if int(value) not in lab.MUSCLES:
            continue
        info = lab.MUSCLES[int(value)]
        for structure, section in rows.groupby("structure"):
            level = str(structure).rsplit(" ", 1)[-1]
            if level not in names:
                continue
            metric = section.set_index("metric")
            area = float(metric["value"].get("csa_mm2", math.nan))
            if not np.isfinite(area):
                reason = str(metric["reason"].get("csa_mm2", ""))
                if reason and "absent" not in reason:
                    flags.append(f"{info.name} at {level}: no cross-section ({reason})")
                continue
            centroid = np.array([float(metric["value"][f"centroid_{a}_lps"]) for a in "xyz"])
            out[(info.group, info.side, level)] = MuscleMeasure(area, centroid)
    return out, flags


def check_sides(
    muscles: dict[tuple[str, str, str], MuscleMeasure], vertebrae: dict[int, VertebraGeometry], on_swap: str = "error"
) -> tuple[dict[tuple[str, str, str], MuscleMeasure], list[str]]:
    """Left labels (odd) must lie on the patient's left (larger LPS x along the vertebra's left axis).

    Args:
        on_swap: "error" raises :class:`InputError`; "swap" exchanges left and right and flags it.
    """
    by_name = {lab.VERTEBRA_NAMES[v]: g for v, g in vertebrae.items()}
    votes = []
    for (_group, side, level), m in muscles.items():
        g = by_name.get(level)
        if g is None or side != "left":
            continue
        left_axis = np.cross(g.superior, g.anterior)  # superior x anterior = patient left in LPS
        votes.append(float(np.dot(m.centroid_lps - g.centroid_lps, left_axis)) > 0)
    if not votes or np.mean(votes) >= 0.5:
        return muscles, []
    message = (
        "left/right swap: muscles labelled left (odd labels) lie on the patient's right in "
        f"{len(votes) - sum(votes)} of {len(votes)} sections"
    )
    if on_swap != "swap":
        raise InputError(
            message + "; fix the label map (odd = left, even = right) or check the image orientation "
            "(pass on_swap='swap' / --fix-sides to exchange them)"
        )
    swapped = {(g, {"left": "right", "right": "left"}[s], lv): m for (g, s, lv), m in muscles.items()}
    return swapped, [message + "; labels exchanged"]


def _trabecular_hu(
    image: Volume, body_mask: np.ndarray, geom: VertebraGeometry, lesion_mask: np.ndarray | None = None
) -> float:
    """Median HU of the body's core: inset by TRABECULAR_INSET_MM, mid-height slab of 10 mm, lesions left out.

    Lesion voxels are excluded so that a lytic defect lowers strength once (through its volume fraction), not
    twice (also through a lower density of the remaining bone).
    """
    from scipy import ndimage

    from spinekit.morphometry.geometry import voxel_points_lps

    inside = ndimage.distance_transform_edt(body_mask, sampling=image.spacing[::-1]) > TRABECULAR_INSET_MM
    if lesion_mask is not None:
        inside &= ~lesion_mask
    points = voxel_points_lps(image, inside)
    if len(points) < 5:
        return math.nan
    sel = _slab(points, geom.centroid_lps, geom.superior, 5.0)
    values = image.array[inside][sel] if sel.sum() >= 5 else image.array[inside]
    return float(np.median(values))


def anatomy_from_labels(
    spine: Volume,
    muscles: Volume | None,
    image: Volume | None,
    sex: str,
    age: float,
    height_cm: float,
    weight_kg: float,
    *,
    modality: str = "CT",
    on_swap: str = "error",
    subject: str = "",
    lesions: Volume | None = None,
    lytic_labels: tuple[int, ...] | None = None,
) -> SubjectAnatomy:
    """Measure the subject's anatomy from its label maps (and image for bone density).

    Vertebral frames come from :func:`spinekit.morphometry.frames.frames_and_bodies`; body CSA is the area of the
    body mask in a 4 mm slab through its centroid normal to its superior axis; muscle CSA and centroid on the
    mid-height plane of each lumbar vertebra (:func:`spinekit.morphometry.muscles.muscle_cross_sections`). Lumbar
    levels outside the field of view are extrapolated from the nearest measured one with the generic spacing and
    flagged.

    Args:
        lesions: optional lesion label map (any grid; resampled nearest-neighbour onto each body's crop). The lytic
            lesion volume fraction of each body is (lesion voxels inside the body mask) / (body voxels), in physical
            volume; lesion voxels are also left out of the trabecular density.
        lytic_labels: values of ``lesions`` that are lytic; None = every non-zero value (blastic lesions do not
            lower strength under the rule used, so give their values here to exclude them).
    """
    from spinekit.morphometry.frames import frames_and_bodies
    from spinekit.morphometry.geometry import voxel_points_lps

    sex = check_subject(sex, age, height_cm, weight_kg)
    flags: list[str] = []
    frames, bodies_crop = frames_and_bodies(spine)
    lumbar = [v for v in LUMBAR if v in frames]
    if len(lumbar) < 2:
        raise InputError(
            f"the spine label map holds {len(lumbar)} lumbar vertebra(e) ({[lab.VERTEBRA_NAMES[v] for v in lumbar]}); "
            "the model needs at least two of L1-L5 (VerSe labels 20-24) to place the lumbar spine"
        )
    vertebrae: dict[int, VertebraGeometry] = {}
    bodies: dict[int, BodyMeasure] = {}
    for v in [T12, *LUMBAR, lab.SACRUM]:
        if v not in frames:
            continue
        f = frames[v]
        centre = f.body_centroid_lps if np.all(np.isfinite(f.body_centroid_lps)) else f.centroid_lps
        if centre is f.centroid_lps and v != lab.SACRUM:
            flags.append(f"{f.name}: body not separable, whole-vertebra centroid used")
        vertebrae[v] = VertebraGeometry(np.asarray(centre, float), np.asarray(f.superior), np.asarray(f.anterior))
        if v in bodies_crop:
            mask, crop = bodies_crop[v]
            pts = voxel_points_lps(crop, mask)
            thickness = slab_mm(spine)
            n = _slab(pts, vertebrae[v].centroid_lps, vertebrae[v].superior, thickness / 2).sum()
            csa = n * spine.voxel_volume_mm3 / thickness
            lesion_mask, fraction = _lesion_mask(lesions, lytic_labels, crop, mask)
            hu = math.nan
            if image is not None and modality.upper() == "CT":
                from spinekit.io import resample_like

                sub_image = resample_like(image, crop.with_array(mask.astype(np.uint8)))
                hu = _trabecular_hu(sub_image, mask, vertebrae[v], lesion_mask)
            bodies[v] = BodyMeasure(csa_mm2=float(csa) if n else math.nan, trabecular_hu=hu, lesion_fraction=fraction)
            if fraction > 0:
                flags.append(f"{f.name}: lytic lesion {100 * fraction:.1f} % of the body volume")
    generic = generic_vertebrae(sex, height_cm)
    for v in LUMBAR:
        if v in vertebrae:
            continue
        near = min(lumbar, key=lambda m: abs(m - v))
        g_off = generic[v].centroid_lps - generic[near].centroid_lps
        ref = vertebrae[near]
        # Generic offset expressed in the generic frame of the neighbour, re-expressed in the measured one.
        gb = _basis(generic[near])
        mb = _basis(ref)
        vertebrae[v] = VertebraGeometry(ref.centroid_lps + mb @ (gb.T @ g_off), ref.superior, ref.anterior)
        flags.append(
            f"{lab.VERTEBRA_NAMES[v]} outside the field of view: placed from {lab.VERTEBRA_NAMES[near]} "
            "with the generic Christophy 2012 spacing"
        )
    muscle_measures: dict[tuple[str, str, str], MuscleMeasure] = {}
    if muscles is None or not np.any(muscles.array):
        flags.append("no muscle labels: generic Christophy 2012 muscle forces and lines of action")
    else:
        muscle_measures, extra = _muscle_sections(muscles, spine, frames, lumbar)
        flags += extra
        muscle_measures, swap_flags = check_sides(muscle_measures, vertebrae, on_swap)
        flags += swap_flags
        groups = {g for g, _s, _l in muscle_measures}
        for group in ("psoas", "quadratus_lumborum", "multifidus", "erector_spinae"):
            if group not in groups and not (group in ("multifidus", "erector_spinae") and "autochthon" in groups):
                flags.append(f"muscle group {group} not labelled: generic Christophy 2012 force kept")
    return SubjectAnatomy(
        sex, age, height_cm, weight_kg, vertebrae, bodies, muscle_measures, tuple(flags), modality.upper(), subject
    )


def _lesion_mask(
    lesions: Volume | None, lytic_labels: tuple[int, ...] | None, crop: Volume, body: np.ndarray
) -> tuple[np.ndarray | None, float]:
    """Lytic voxels on a body's crop grid and their share of the body volume (0.0 without lesions)."""
    if lesions is None:
        return None, 0.0
    from spinekit.io import resample_like

    values = resample_like(lesions, crop.with_array(body.astype(np.uint8)), is_label=True).array
    lytic = np.isin(values, lytic_labels) if lytic_labels is not None else values > 0
    lytic &= body
    total = int(body.sum())
    return lytic, (float(lytic.sum()) / total if total else 0.0)


def _basis(g: VertebraGeometry) -> np.ndarray:
    """Columns: superior, anterior, left (LPS)."""
    return np.stack([g.superior, g.anterior, np.cross(g.superior, g.anterior)], axis=1)
