"""Vertebral body measures: body mask, heights, volume, endplate areas, Genant grade."""

from __future__ import annotations

import math

import numpy as np

from spinekit import labels as lab
from spinekit.errors import LabelError
from spinekit.io import Volume
from spinekit.morphometry.context import SpineModel
from spinekit.morphometry.frames import VertebraFrame, body_mask_from_frame, vertebra_frame
from spinekit.morphometry.geometry import SMOOTH_VOXELS, crop_mask
from spinekit.morphometry.heights import HeightResult, heights_along, section_area
from spinekit.tables import Measurement, missing

#: Genant semi-quantitative grades by height reduction: grade 1 20-25 %, grade 2 25-40 %, grade 3 > 40 %
#: (Genant et al. 1993, J Bone Miner Res 8:1137, Fig. 1). Reductions below 20 % are grade 0 (normal).
GENANT_THRESHOLDS = (0.20, 0.25, 0.40)
#: Depth (mm) inside the endplate at which the endplate cross-section is taken (clears the cortical rim).
ENDPLATE_INSET_MM = 2.0

HEIGHT_METHOD = "body mask extent along vertebra axis at 15/50/85 % depth (TotalSegmentator positions)"


def vertebral_body_mask(spine: Volume, label: int, frame: VertebraFrame | None = None) -> np.ndarray:
    """Boolean mask (spine's grid) of the vertebral body of ``label`` without its posterior elements."""
    if frame is None:
        frame = vertebra_frame(spine, label)
    if frame.label != label:
        raise LabelError(f"frame is for label {frame.label}, not {label}")
    return body_mask_from_frame(spine, frame)


def body_height_result(spine: Volume, label: int, frame: VertebraFrame | None = None) -> HeightResult:
    """Heights with the measured segments (for figures)."""
    if frame is None:
        frame = vertebra_frame(spine, label)
    body = vertebral_body_mask(spine, label, frame)
    if not body.any() or not np.all(np.isfinite(frame.body_centroid_lps)):
        return HeightResult(
            heights={"anterior": math.nan, "middle": math.nan, "posterior": math.nan},
            reason="vertebral body could not be separated",
        )
    crop = crop_mask(spine, body, smooth=SMOOTH_VOXELS)
    return heights_along(crop.volume, frame.body_centroid_lps, frame.superior, frame.anterior, frame.right)


def body_heights(spine: Volume, label: int, frame: VertebraFrame | None = None) -> dict[str, float]:
    """Anterior, middle and posterior heights (mm) of the body of ``label`` along ``frame.superior``."""
    return dict(body_height_result(spine, label, frame).heights)


def genant_grade(
    anterior: float, middle: float, posterior: float, posterior_reference: float | None = None
) -> tuple[float, str, float]:
    """Genant semi-quantitative grade from height ratios.

    Reductions: wedge = 1 - Ha/Hp, biconcave = 1 - Hm/Hp, crush = 1 - Hp/Hp_ref with Hp_ref the mean
    posterior height of the adjacent vertebrae (Genant et al. 1993; ratios as in McCloskey et al.
    1993, Osteoporos Int 3:138). Returns (grade 0-3 or NaN, type, largest reduction).
    """
    heights = np.array([anterior, middle, posterior], float)
    if not np.all(np.isfinite(heights)) or posterior <= 0:
        return math.nan, "", math.nan
    reductions = {
        "wedge": max(0.0, 1.0 - anterior / posterior),
        "biconcave": max(0.0, 1.0 - middle / max(anterior, posterior)),
    }
    if posterior_reference is not None and np.isfinite(posterior_reference) and posterior_reference > 0:
        reductions["crush"] = max(0.0, 1.0 - max(anterior, middle, posterior) / posterior_reference)
    kind = max(reductions, key=reductions.get)
    reduction = reductions[kind]
    grade = float(sum(reduction >= t for t in GENANT_THRESHOLDS))
    return grade, kind if grade > 0 else "normal", reduction


def body_measurements(model: SpineModel, label: int) -> list[Measurement]:
    """Tidy rows for one vertebra: centroids, axes, heights, volumes, endplate areas, Genant grade."""
    spine = model.spine
    frame = model.frames[label]
    name = frame.name
    rows: list[Measurement] = []
    for axis, value in zip("xyz", frame.centroid_lps, strict=True):
        rows.append(Measurement(name, label, f"centroid_{axis}_lps", value, "mm", "mean of voxel centres (LPS)"))
    voxel = spine.voxel_volume_mm3
    whole = model.bodies.get(label) if label == lab.SACRUM else None
    box = model.boxes.get(label)
    if whole is not None:
        count = float((whole.volume.array >= 0.5).sum())
    else:
        count = float((spine.array[box] == label).sum()) if box is not None else float((spine.array == label).sum())
    rows.append(Measurement(name, label, "vertebra_volume", count * voxel, "mm3", "voxel count x voxel volume"))
    if label == lab.SACRUM:
        return rows
    for axis, value in zip("xyz", frame.body_centroid_lps, strict=True):
        if np.isfinite(value):
            rows.append(
                Measurement(name, label, f"body_centroid_{axis}_lps", value, "mm", "mean of body voxel centres")
            )
        else:
            rows.append(
                missing(
                    name,
                    label,
                    f"body_centroid_{axis}_lps",
                    "mm",
                    "mean of body voxel centres",
                    "vertebral body could not be separated",
                )
            )
    for axis_name in ("superior", "anterior", "right"):
        for axis, value in zip("xyz", getattr(frame, axis_name), strict=True):
            rows.append(Measurement(name, label, f"axis_{axis_name}_{axis}", value, "1", frame.axis_method))
    crop = model.bodies.get(label)
    if crop is None:
        for metric, unit_ in (
            ("body_volume", "mm3"),
            ("body_height_anterior", "mm"),
            ("body_height_middle", "mm"),
            ("body_height_posterior", "mm"),
        ):
            rows.append(missing(name, label, metric, unit_, HEIGHT_METHOD, "vertebral body could not be separated"))
        return rows
    rows.append(
        Measurement(
            name,
            label,
            "body_volume_fraction",
            frame.body_fraction,
            "1",
            f"body / vertebra volume; body {frame.body_method}",
            frame.body_flag,
        )
    )
    rows.append(
        Measurement(
            name,
            label,
            "body_volume",
            float((crop.volume.array >= 0.5).sum()) * voxel,
            "mm3",
            "voxel count x voxel volume (body part)",
        )
    )
    result = model.heights.get(label) or HeightResult(reason="body centroid undefined")
    reason = result.reason or frame.body_flag
    if frame.touches_border:
        reason = "vertebra touches the image border: heights may be truncated"
    for position in ("anterior", "middle", "posterior"):
        value = result.heights.get(position, math.nan)
        metric = f"body_height_{position}"
        if frame.touches_border or not np.isfinite(value):
            rows.append(missing(name, label, metric, "mm", HEIGHT_METHOD, reason or "no boundary found"))
        else:
            rows.append(Measurement(name, label, metric, value, "mm", HEIGHT_METHOD, frame.body_flag))
    rows.append(
        Measurement(
            name,
            label,
            "body_depth",
            result.depth_mm,
            "mm",
            "body extent along anterior axis",
            "" if np.isfinite(result.depth_mm) else result.reason,
        )
    )
    rows.extend(_endplate_rows(crop.volume, frame, result))
    if not frame.touches_border:
        rows.extend(_genant_rows(model, label, result))
    else:
        rows.append(missing(name, label, "genant_grade", "grade", "Genant 1993 semi-quantitative", reason))
    return rows


def _endplate_rows(body: Volume, frame: VertebraFrame, result: HeightResult) -> list[Measurement]:
    rows = []
    method = f"body cross-section {ENDPLATE_INSET_MM:g} mm inside the endplate at mid-depth, perpendicular to axis"
    segment = result.segments.get("middle")
    for which, index, sign in (("superior", 1, -1.0), ("inferior", 0, 1.0)):
        metric = f"{which}_endplate_area"
        if segment is None:
            rows.append(missing(frame.name, frame.label, metric, "mm2", method, "middle height line not measured"))
            continue
        centre = segment[index] + sign * ENDPLATE_INSET_MM * frame.superior
        area, _c, at_edge = section_area(body, centre, frame.superior)
        if at_edge:
            rows.append(missing(frame.name, frame.label, metric, "mm2", method, "section larger than sampled square"))
        else:
            rows.append(Measurement(frame.name, frame.label, metric, area, "mm2", method))
    return rows


def _genant_rows(model: SpineModel, label: int, result: HeightResult) -> list[Measurement]:
    name = model.frames[label].name
    results = model.heights
    heights = result.heights
    references = []
    order = [v for v in model.order if v != lab.SACRUM]
    position = order.index(label)
    for neighbour in order[max(0, position - 1) : position + 2]:
        if neighbour != label and neighbour in results:
            references.append(results[neighbour].heights.get("posterior", math.nan))
    reference = float(np.nanmean(references)) if references and np.any(np.isfinite(references)) else None
    grade, kind, reduction = genant_grade(
        heights.get("anterior", math.nan),
        heights.get("middle", math.nan),
        heights.get("posterior", math.nan),
        reference,
    )
    method = "Genant 1993 semi-quantitative from height ratios"
    if not np.isfinite(grade):
        return [missing(name, label, "genant_grade", "grade", method, "heights not measured")]
    return [
        Measurement(name, label, "genant_grade", grade, "grade", f"{method}; type={kind}"),
        Measurement(name, label, "height_reduction", reduction, "1", f"{method}; largest of wedge/biconcave/crush"),
        Measurement(name, label, "wedge_ratio", heights["anterior"] / heights["posterior"], "1", "Ha/Hp"),
        Measurement(
            name,
            label,
            "biconcavity_ratio",
            heights["middle"] / max(heights["anterior"], heights["posterior"]),
            "1",
            "Hm/max(Ha, Hp)",
        ),
    ]
