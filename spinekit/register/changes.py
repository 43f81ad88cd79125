"""What changed in one vertebra between baseline and follow-up, measured in the baseline frame after registration.

The follow-up vertebra is carried into the baseline grid by its own rigid transform (through its signed distance
map, so the shape is resampled without nearest-neighbour staircase), and every measure is taken with the baseline's
frame, body centroid and measurement lines, so a change is a change of the bone, not of where it was measured:

* volume of the whole vertebra (mm³ and %);
* anterior / middle / posterior body heights at 85/50/15 % of the depth (:func:`spinekit.morphometry.heights.
  heights_along`, TotalSegmentator positions), each scan's body in its own endplate frame (:func:`endplate_axes`),
  and their loss (mm and %). Both bodies are cut off their posterior elements by the same plane, the baseline
  body's cut (:class:`spinekit.register.body.BodyCut`) carried by the registration: the follow-up body is not
  re-separated on a collapsed shape, and bone behind the cut (pedicle roots, the posterior wall behind a cut that
  stepped anterior) is in neither body;
* Genant grade at both times: the semi-quantitative grade of the shape ratios (:func:`genant_grade`) and, at
  follow-up, the incident-deformity grade of the largest height loss relative to the same vertebra at baseline
  (Genant et al. 1993, J Bone Miner Res 8:1137: 20-25 % grade 1, 25-40 % grade 2, > 40 % grade 3);
* mean intensity of the trabecular body where both scans have bone (≥ 1 mm + 1.5 voxels inside both surfaces,
  clear of the cortex and partial volume), as HU for CT and vBMD when a calibration is given
  (:class:`spinekit.biomech.strength.Calibration`);
* lesion volume inside the vertebra when lesion maps are given (any non-zero lesion voxel inside the level).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from spinekit.io import Volume
from spinekit.labels import SACRUM, VERTEBRA_NAMES
from spinekit.register.body import BaselineBody, BodyCut
from spinekit.register.geometry import crop_to_label, signed_distance
from spinekit.tables import Measurement, missing

#: Least depth inside the bone surface (mm) from which the trabecular mean is taken.
TRABECULAR_INSET_MM = 1.5
#: Cortical shell thickness (mm) of lumbar bodies, about 0.4-1 mm (Silva et al. 1994, J Bone Miner Res 9:1137);
#: the inset is this plus 1.5 voxels, so neither the shell nor its partial-volume/interpolation rim (a linearly
#: resampled follow-up spreads it over about one voxel) reaches the mean: on the 2 mm phantom a 1.5 mm inset read
#: an intact body 38 HU too dense at follow-up.
CORTEX_MM = 1.0
#: The follow-up body is the aligned follow-up vertebra within this distance (mm) of the baseline body, so a body
#: that bulges (retropulsion, blastic growth) is still measured whole, while the posterior elements are not.
BODY_REGION_MARGIN_MM = 3.0
#: Incident Genant grades from height loss relative to baseline (Genant et al. 1993, Fig. 1).
GENANT_LOSS_THRESHOLDS = (0.20, 0.25, 0.40)
POSITIONS = ("anterior", "middle", "posterior")
#: Central share of the body's depth and width whose endplates define the mid-plane (the rounded rims left out).
ENDPLATE_FIT_FRACTION = 0.7
#: Metrics that need the whole vertebra in both scans.
SHAPE_METRICS = ("volume_", "height_", "genant_")
METHOD_SHAPE = "baseline frame after per-vertebra rigid registration"


@dataclass
class AlignedLevel:
    """One level on a baseline crop: baseline masks and the follow-up carried into it."""

    reference: sitk.Image
    baseline_vertebra: np.ndarray
    followup_vertebra: np.ndarray
    baseline_distance: np.ndarray
    followup_distance: np.ndarray
    body: np.ndarray | None
    front_mm: np.ndarray | None = None  # distance (mm) of each crop voxel centre in front of the body's cut plane


def align_level(
    baseline_spine: Volume,
    followup_spine: Volume,
    label: int,
    transform: sitk.Transform,
    followup_label: int | None = None,
    body_mask: np.ndarray | None = None,
    margin_mm: float = 10.0,
    cut: BodyCut | None = None,
) -> AlignedLevel:
    """The level's baseline crop with the follow-up vertebra resampled into it by ``transform``.

    ``cut`` is the baseline body's cut plane (baseline LPS): on the crop, which is in the baseline frame, it is where
    the registration carries the follow-up's cut.
    """
    fixed = crop_to_label(baseline_spine.to_sitk() == label, margin_mm)
    fixed_distance = sitk.GetArrayFromImage(signed_distance(fixed))
    moving = crop_to_label(followup_spine.to_sitk() == (followup_label or label), margin_mm + 10.0)
    moved = sitk.Resample(signed_distance(moving), fixed, transform, sitk.sitkLinear, 1e3)
    followup_distance = sitk.GetArrayFromImage(moved)
    body = None
    if body_mask is not None:
        body_image = baseline_spine.with_array(np.asarray(body_mask, dtype=np.uint8)).to_sitk()
        body = sitk.GetArrayFromImage(sitk.Resample(body_image, fixed, sitk.Transform(), sitk.sitkNearestNeighbor)) > 0
    front = None
    if cut is not None and np.isfinite(cut.offset_mm):
        shape = sitk.GetArrayViewFromImage(fixed).shape
        front = cut.depth_mm(_crop_points(fixed, np.ones(shape, bool))).reshape(shape)
    return AlignedLevel(
        reference=fixed,
        baseline_vertebra=sitk.GetArrayFromImage(fixed) > 0,
        followup_vertebra=followup_distance < 0,
        baseline_distance=fixed_distance,
        followup_distance=followup_distance,
        body=body,
        front_mm=front,
    )


def touches_border(mask: np.ndarray) -> bool:
    """Whether a boolean mask reaches the outermost voxel layer of its array."""
    return bool(
        mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any() or mask[..., 0].any()
        or mask[..., -1].any()
    )  # fmt: skip


def _crop_volume(reference: sitk.Image, array: np.ndarray) -> Volume:
    return Volume(
        array.astype(np.float32),
        reference.GetSpacing(),
        reference.GetOrigin(),
        np.asarray(reference.GetDirection()).reshape(3, 3),
    )


def body_regions(aligned: AlignedLevel) -> tuple[np.ndarray, np.ndarray]:
    """Baseline body and the aligned follow-up body: follow-up bone within the margin of the baseline body and in
    front of the baseline body's cut plane."""
    if aligned.body is None:
        raise ValueError("no body mask")
    body_image = sitk.GetImageFromArray(aligned.body.astype(np.uint8))
    body_image.CopyInformation(aligned.reference)
    near = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(body_image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    )
    followup = aligned.followup_vertebra & (near <= BODY_REGION_MARGIN_MM)
    if aligned.front_mm is not None:
        followup &= aligned.front_mm >= 0.0
    return aligned.body, followup


def level_changes(
    baseline_spine: Volume,
    followup_spine: Volume,
    label: int,
    transform: sitk.Transform,
    *,
    followup_label: int | None = None,
    body: BaselineBody | None = None,
    baseline_image: Volume | None = None,
    followup_image: Volume | None = None,
    baseline_lesions: Volume | None = None,
    followup_lesions: Volume | None = None,
    calibration=None,
    intensity_reason: str = "",
) -> list[Measurement]:
    """Tidy rows of one level's change (see the module docstring for each measure).

    Args:
        baseline_spine / followup_spine: label maps; ``followup_label`` when the level is numbered differently.
        transform: baseline point -> follow-up point for this level.
        body: the baseline body with its frame and cut (:func:`spinekit.register.body.baseline_bodies`); heights
            are NaN without one, and carry its plausibility flag as their reason.
        baseline_image / followup_image: intensities for the trabecular mean (omit, or give ``intensity_reason``
            when they cannot be compared, e.g. CT against MRI).
        baseline_lesions / followup_lesions: lesion maps on the respective grids.
        calibration: object with ``vbmd(hu)`` (e.g. :class:`spinekit.biomech.strength.Calibration`).
    """
    name = VERTEBRA_NAMES.get(label, str(label))
    rows: list[Measurement] = []
    flabel = followup_label or label

    def add(metric: str, value: float, unit: str, method: str = METHOD_SHAPE, reason: str = "") -> None:
        if reason or value is None or not np.isfinite(value):
            rows.append(missing(name, label, metric, unit, method, reason or "not measurable"))
        else:
            rows.append(Measurement(name, label, metric, float(value), unit, method))

    v0 = float((baseline_spine.array == label).sum() * baseline_spine.voxel_volume_mm3)
    v1 = float((followup_spine.array == flabel).sum() * followup_spine.voxel_volume_mm3)
    add("volume_baseline", v0, "mm3", "voxel count x voxel volume")
    add("volume_followup", v1, "mm3", "voxel count x voxel volume")
    add("volume_change", v1 - v0, "mm3", "follow-up - baseline")
    add("volume_change_percent", 100.0 * (v1 - v0) / v0 if v0 else math.nan, "%", "follow-up / baseline - 1")

    has_body = body is not None and body.mask is not None
    aligned = align_level(baseline_spine, followup_spine, label, transform, flabel, body.mask if has_body else None,
                          cut=body.cut if has_body else None)  # fmt: skip
    rows.extend(_height_rows(name, label, aligned, body))
    rows.extend(
        _intensity_rows(name, label, aligned, transform, baseline_image, followup_image, calibration, intensity_reason)
    )
    cut = [which for which, spine, v in (("baseline", baseline_spine, label), ("follow-up", followup_spine, flabel))
           if touches_border(spine.array == v)]  # fmt: skip
    if cut:
        # A vertebra cut by the field of view has no whole volume or body to compare: say so rather than report a
        # change that is only the edge of the image.
        reason = f"vertebra cut by the {' and '.join(cut)} field of view (touches the image border)"
        rows = [
            missing(r.structure, r.label, r.metric, r.unit, r.method, reason)
            if r.metric.startswith(SHAPE_METRICS)
            else r
            for r in rows
        ]
    if baseline_lesions is not None or followup_lesions is not None:
        l0 = _lesion_volume(baseline_lesions, baseline_spine, label)
        l1 = _lesion_volume(followup_lesions, followup_spine, flabel)
        add("lesion_volume_baseline", l0, "mm3", "lesion voxels inside the level")
        add("lesion_volume_followup", l1, "mm3", "lesion voxels inside the level")
        add("lesion_volume_change", l1 - l0, "mm3", "follow-up - baseline")
    return rows


def _lesion_volume(lesions: Volume | None, spine: Volume, label: int) -> float:
    if lesions is None:
        return math.nan
    if lesions.array.shape != spine.array.shape:
        from spinekit.io import resample_labels_to

        lesions = resample_labels_to(lesions, spine)
    return float(((lesions.array > 0) & (spine.array == label)).sum() * spine.voxel_volume_mm3)


def _height_rows(name: str, label: int, aligned: AlignedLevel, body: BaselineBody | None) -> list[Measurement]:
    from spinekit.morphometry.body import genant_grade

    reason_sacrum = ""
    if label == SACRUM:
        aligned = dataclasses.replace(aligned, body=None)
        reason_sacrum = "the sacrum has no vertebral body heights"
    units = {"height": "mm", "loss": "mm", "percent": "%", "grade": "grade"}
    frame = body.frame if body is not None else None
    if aligned.body is None or frame is None or not aligned.body.any():
        reason = reason_sacrum or (body.flag if body is not None and body.flag else "")
        reason = reason or "vertebral body could not be separated from the posterior elements"
        rows = []
        for pos in POSITIONS:
            for metric, unit in ((f"height_{pos}_baseline", "mm"), (f"height_{pos}_followup", "mm"),
                                 (f"height_loss_{pos}", "mm"), (f"height_loss_{pos}_percent", "%")):  # fmt: skip
                rows.append(missing(name, label, metric, unit, METHOD_SHAPE, reason))
        for metric in ("genant_grade_baseline", "genant_grade_followup", "genant_grade_change"):
            rows.append(missing(name, label, metric, units["grade"], "Genant 1993", reason))
        return rows
    body0, body1 = body_regions(aligned)
    start_axes = (np.asarray(frame.superior), np.asarray(frame.anterior), np.asarray(frame.right))
    # Each body is measured in its own endplate frame (the carried baseline axes turned to the mid-plane of its
    # endplates), through its own centroid at 15/50/85 % of its own depth, on a soft mask whose 0.5 level is the
    # zero of the signed distance: a residual tilt of the registration does not leak into the heights, and any
    # systematic error of the height method cancels in the loss.
    h0 = _own_frame_heights(aligned, aligned.baseline_distance, body0, start_axes)
    h1 = _own_frame_heights(aligned, aligned.followup_distance, body1, start_axes)
    rows: list[Measurement] = []
    losses = []
    for pos in POSITIONS:
        a, b = h0.heights.get(pos, math.nan), h1.heights.get(pos, math.nan)
        loss = a - b
        losses.append(loss / a if a > 0 else math.nan)
        for metric, value, unit in (
            (f"height_{pos}_baseline", a, "mm"),
            (f"height_{pos}_followup", b, "mm"),
            (f"height_loss_{pos}", loss, "mm"),
            (f"height_loss_{pos}_percent", 100.0 * loss / a if a > 0 else math.nan, "%"),
        ):
            if np.isfinite(value):
                # A body whose volume fraction morphometry finds implausible is measured, with its flag (as the
                # morphometry heights are): both scans share the body's definition, so the loss is still a change.
                rows.append(Measurement(name, label, metric, value, unit, METHOD_SHAPE, body.flag))
            else:
                reason = h1.reason or h0.reason or "height line did not cross the body"
                rows.append(missing(name, label, metric, unit, METHOD_SHAPE, reason))
    g0 = genant_grade(*(h0.heights.get(p, math.nan) for p in POSITIONS))[0]
    g1_shape = genant_grade(*(h1.heights.get(p, math.nan) for p in POSITIONS))[0]
    finite = [x for x in losses if np.isfinite(x)]
    g1_loss = float(sum(max(finite) >= t for t in GENANT_LOSS_THRESHOLDS)) if finite else math.nan
    g1 = np.nanmax([g1_shape, g1_loss]) if np.isfinite([g1_shape, g1_loss]).any() else math.nan
    method = "Genant 1993: shape ratios; follow-up also height loss vs baseline"
    for metric, value in (
        ("genant_grade_baseline", g0),
        ("genant_grade_followup", g1),
        ("genant_grade_change", g1 - g0),
    ):
        if np.isfinite(value):
            rows.append(Measurement(name, label, metric, float(value), "grade", method))
        else:
            rows.append(missing(name, label, metric, "grade", method, "heights not measurable"))
    return rows


def _own_frame_heights(aligned: AlignedLevel, distance: np.ndarray, region: np.ndarray, axes: tuple):
    from spinekit.morphometry.heights import HeightResult, heights_along

    if not region.any():
        return HeightResult(heights={p: math.nan for p in POSITIONS}, reason="no follow-up body near the baseline body")
    mask = _soft_mask(aligned, distance, region)
    centre = _crop_points(aligned.reference, region).mean(axis=0)
    return heights_along(mask, centre, *endplate_axes(mask, centre, *axes))


def endplate_axes(
    mask: Volume, centre: np.ndarray, superior: np.ndarray, anterior: np.ndarray, right: np.ndarray, rounds: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame turned so that ``superior`` is normal to the mid-plane between the two endplates of a body.

    Lines along ``superior`` over the central :data:`ENDPLATE_FIT_FRACTION` of the body's depth and width give
    both endplate surfaces; a least-squares plane through each (slopes along anterior and right) and the mean of
    the two slopes is the tilt of the mid-plane, which defines the vertebra's superior axis as in the phantom
    truth and in Genant's method (heights perpendicular to the endplates' mean plane; Genant et al. 1993). The
    frame is kept when too few lines cross the body.
    """
    from spinekit.morphometry.geometry import line_extents

    superior, anterior, right = (np.asarray(v, dtype=float) for v in (superior, anterior, right))
    for _ in range(rounds):
        low, high = line_extents(mask, np.asarray(centre)[None, :], anterior)
        wide_low, wide_high = line_extents(mask, np.asarray(centre)[None, :], right)
        if not (np.isfinite(low[0]) and np.isfinite(wide_low[0])):
            break
        half = 0.5 * ENDPLATE_FIT_FRACTION
        mid_a, mid_r = 0.5 * (low[0] + high[0]), 0.5 * (wide_low[0] + wide_high[0])
        da = mid_a + np.linspace(-half, half, 9) * (high[0] - low[0])
        dr = mid_r + np.linspace(-half, half, 7) * (wide_high[0] - wide_low[0])
        ga, gr = (g.ravel() for g in np.meshgrid(da, dr, indexing="ij"))
        points = centre[None, :] + ga[:, None] * anterior[None, :] + gr[:, None] * right[None, :]
        bottom, top = line_extents(mask, points, superior)
        ok = np.isfinite(bottom) & np.isfinite(top)
        if ok.sum() < 12:
            break
        design = np.stack([np.ones(ok.sum()), ga[ok], gr[ok]], axis=1)
        fit_top = np.linalg.lstsq(design, top[ok], rcond=None)[0]
        slope = 0.5 * (fit_top + np.linalg.lstsq(design, bottom[ok], rcond=None)[0])
        tilted = superior - slope[1] * anterior - slope[2] * right
        superior = tilted / np.linalg.norm(tilted)
        anterior = anterior - np.dot(anterior, superior) * superior
        anterior /= np.linalg.norm(anterior)
        right = np.cross(anterior, superior)
    return superior, anterior, right


def _soft_mask(aligned: AlignedLevel, distance: np.ndarray, region: np.ndarray) -> Volume:
    """A 0-1 mask that crosses 0.5 at the zero of ``distance`` (linear over one voxel), kept near ``region``.

    Behind the body's cut plane the mask is cut too (the distance to the intersection of the bone and the half-space
    in front of the plane is at least the larger of the two signed distances), so the dilation that lets the mask
    cross 0.5 at the true surface does not bring back bone from behind the cut.
    """
    voxel = float(min(aligned.reference.GetSpacing()))
    if aligned.front_mm is not None:
        distance = np.maximum(distance, -aligned.front_mm)
    soft = np.clip(0.5 - distance / voxel, 0.0, 1.0)
    near = ndimage.binary_dilation(region, iterations=1)
    return _crop_volume(aligned.reference, np.where(near, soft, 0.0))


def _crop_points(reference: sitk.Image, mask: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask)[:, ::-1].astype(float)
    origin = np.asarray(reference.GetOrigin())
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    return origin + (index * np.asarray(reference.GetSpacing())) @ direction.T


def _intensity_rows(
    name: str,
    label: int,
    aligned: AlignedLevel,
    transform: sitk.Transform,
    baseline_image: Volume | None,
    followup_image: Volume | None,
    calibration,
    reason: str,
) -> list[Measurement]:
    metrics = [
        ("mean_hu_body_baseline", "HU"),
        ("mean_hu_body_followup", "HU"),
        ("mean_hu_body_change", "HU"),
        ("vbmd_body_baseline", "mg/cm3"),
        ("vbmd_body_followup", "mg/cm3"),
        ("vbmd_body_change", "mg/cm3"),
    ]
    voxel = float(max(aligned.reference.GetSpacing()))
    inset = max(TRABECULAR_INSET_MM, CORTEX_MM + 1.5 * voxel)
    method = f"mean >= {inset:.1f} mm inside the body surface, bone present in both scans"
    if not reason and (baseline_image is None or followup_image is None):
        reason = "no baseline and follow-up images given"
    if not reason and aligned.body is None:
        reason = "vertebral body could not be separated from the posterior elements"
    if reason:
        return [missing(name, label, m, u, method, reason) for m, u in metrics]
    body0, body1 = body_regions(aligned)
    # The same bone at both times: the trabecular core of the baseline body that the aligned follow-up also covers
    # (a collapsed or remodelled part is compared where it still is).
    inner0 = body0 & (aligned.baseline_distance <= -inset) & (aligned.followup_distance <= -inset)
    inner1 = inner0
    base = sitk.GetArrayFromImage(
        sitk.Resample(
            baseline_image.to_sitk(), aligned.reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
        )  # fmt: skip
    )
    follow = sitk.GetArrayFromImage(
        sitk.Resample(followup_image.to_sitk(), aligned.reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    )
    if not inner0.any() or not inner1.any():
        return [missing(name, label, m, u, method, "body thinner than the trabecular inset") for m, u in metrics]
    m0, m1 = float(base[inner0].mean()), float(follow[inner1].mean())
    rows = [
        Measurement(name, label, "mean_hu_body_baseline", m0, "HU", method),
        Measurement(name, label, "mean_hu_body_followup", m1, "HU", method),
        Measurement(name, label, "mean_hu_body_change", m1 - m0, "HU", method),
    ]
    if calibration is None:
        why = "no HU -> vBMD calibration given (pass a phantom or phantomless calibration)"
        rows += [missing(name, label, m, u, method, why) for m, u in metrics[3:]]
    else:
        b0, b1 = calibration.vbmd(m0), calibration.vbmd(m1)
        cal = f"{method}; {getattr(calibration, 'method', 'calibration')}"
        rows += [
            Measurement(name, label, "vbmd_body_baseline", b0, "mg/cm3", cal),
            Measurement(name, label, "vbmd_body_followup", b1, "mg/cm3", cal),
            Measurement(name, label, "vbmd_body_change", b1 - b0, "mg/cm3", cal),
        ]
    return rows
