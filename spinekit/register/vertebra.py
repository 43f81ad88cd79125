"""Rigid (6-DOF) registration of one vertebra of a follow-up scan to the same vertebra at baseline, from the masks.

Shape, not intensity, drives it, so it holds where metastases change density (lytic/blastic lesions, cement,
radiotherapy) and across modalities. Steps, per level:

1. crop both masks around the vertebra (+ margin) and turn them into signed distance maps (mm);
2. initialise by matching the centroids, then keep the best of the identity rotation and the principal-axes
   rotations (the four sign choices of the axes with a proper rotation), scored by the metric itself;
3. refine with SimpleITK's ``ImageRegistrationMethod``: mean squares between the distance maps, Euler3D transform,
   regular-step gradient descent, two resolution levels; the metric is restricted to a band around the baseline
   surface (cortical shell and posterior elements, not the body interior);
4. trim: surface points still far from the follow-up surface (a collapsed endplate, a grown lesion bulging out) are
   excluded with a margin and the fit is refined on what did not change (a trimmed fit in the sense of
   Chetverikov et al. 2002, trimmed ICP), so a collapse does not bias the rigid part.

Distance-map registration of segmentations follows the per-structure approach of vertebra-wise CT registration
(e.g. Sanhinova et al. 2024, per-vertebra surface registration, Hausdorff 0.65 mm).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from spinekit.errors import InputError
from spinekit.io import Volume
from spinekit.labels import VERTEBRA_NAMES
from spinekit.register.geometry import crop_to_label, principal_axes, signed_distance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationConfig:
    """Settings of the per-vertebra registration; defaults tuned on phantoms and verse004 (1-3 mm voxels).

    Attributes:
        margin_mm: crop margin around the vertebra; larger than the band so the band is never cut.
        distance_clip_mm: distance maps are clipped here so far-away voxels do not dominate the mean squares.
        band_outside_mm / band_inside_mm: the metric uses baseline voxels from ``band_inside_mm`` inside to
            ``band_outside_mm`` outside the surface (shell and posterior elements; the body interior carries no
            shape information).
        shrink_factors / smoothing_sigmas_mm: the multi-resolution schedule.
        iterations: gradient-descent iterations per level.
        learning_rate_mm / min_step_mm: regular-step gradient descent, in physical shift units.
        sampling_fraction: random fraction of band voxels sampled by the metric.
        trim_mm: surface points farther than this from the follow-up surface after the first fit are treated as
            changed and left out of the refinement (at least twice the voxel size, see :func:`register_vertebra`).
        trim_dilate_mm: the excluded region extends this far around each changed point.
        trim_rounds: refinements on the trimmed band.
        changed_body_fraction: above this share of changed surface after the first fit, the body is suspected to
            have collapsed and the posterior elements are fitted alone first.
        max_changed_fraction: above this share no trimmed refinement is attempted (nothing reliable is left).
        body_margin_mm: the body is excluded with this margin when fitting the posterior elements.
        seed: sampling seed (reproducible results).
    """

    margin_mm: float = 12.0
    distance_clip_mm: float = 10.0
    band_outside_mm: float = 6.0
    band_inside_mm: float = 3.0
    shrink_factors: tuple[int, ...] = (2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (1.0, 0.0)
    iterations: int = 120
    learning_rate_mm: float = 2.0
    min_step_mm: float = 0.005
    sampling_fraction: float = 0.3
    trim_mm: float = 1.5
    trim_dilate_mm: float = 3.0
    trim_rounds: int = 1
    changed_body_fraction: float = 0.18
    max_changed_fraction: float = 0.6
    body_margin_mm: float = 6.0
    seed: int = 20240601


@dataclass
class VertebraRegistration:
    """Result for one level.

    Attributes:
        label: VerSe level of the baseline vertebra.
        transform: baseline LPS point -> follow-up LPS point (ITK convention).
        initial_transform: the chosen initialisation (same convention).
        metric: final mean-squares value (mm^2) on the trimmed band.
        changed_fraction: share of baseline surface points left out as changed by the trimming.
        residual_mean_mm / residual_p95_mm: distance from the baseline surface points that were fitted (those the
            trimming kept) to the follow-up surface after registration: mean and 95th percentile.
        residual_all_mean_mm: the same over the whole baseline surface (includes what changed).
        seconds: wall time.
        initialisation: which candidate won ("identity" or "axes+-+-").
        followup_label: the follow-up label that was used.
    """

    label: int
    transform: sitk.Euler3DTransform
    initial_transform: sitk.Euler3DTransform
    metric: float
    changed_fraction: float
    residual_mean_mm: float
    residual_p95_mm: float
    residual_all_mean_mm: float
    seconds: float
    initialisation: str
    followup_label: int
    details: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return VERTEBRA_NAMES.get(self.label, str(self.label))


def _mask(spine: Volume | sitk.Image, label: int, which: str) -> sitk.Image:
    image = spine.to_sitk() if isinstance(spine, Volume) else spine
    mask = sitk.Cast(image == label, sitk.sitkUInt8)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(mask)
    if stats.GetSum() == 0:
        raise InputError(
            f"the {which} mask of {VERTEBRA_NAMES.get(label, label)} (label {label}) is empty; "
            "check the label map (VerSe numbering) or leave this level out"
        )
    return mask


def prepare_distance_maps(
    baseline_spine: Volume | sitk.Image,
    followup_spine: Volume | sitk.Image,
    label: int,
    followup_label: int | None = None,
    config: RegistrationConfig | None = None,
) -> tuple[sitk.Image, sitk.Image, sitk.Image, sitk.Image]:
    """Cropped baseline mask, baseline distance map, follow-up mask and follow-up distance map of one level."""
    config = config or RegistrationConfig()
    fixed_mask = crop_to_label(_mask(baseline_spine, label, "baseline"), config.margin_mm)
    moving_mask = crop_to_label(
        _mask(followup_spine, followup_label or label, "follow-up"), config.margin_mm + config.distance_clip_mm
    )
    return (
        fixed_mask,
        signed_distance(fixed_mask, config.distance_clip_mm),
        moving_mask,
        signed_distance(moving_mask, config.distance_clip_mm),
    )


def register_vertebra(
    baseline_spine: Volume | sitk.Image,
    followup_spine: Volume | sitk.Image,
    label: int,
    *,
    followup_label: int | None = None,
    config: RegistrationConfig | None = None,
    initial_transform: sitk.Transform | None = None,
    body_mask: np.ndarray | None = None,
) -> VertebraRegistration:
    """Rigidly register one vertebra of the follow-up to the baseline from the label maps.

    Args:
        baseline_spine: baseline label map (VerSe labels).
        followup_spine: follow-up label map, any grid.
        label: level to register.
        followup_label: the level's label in the follow-up when it differs (e.g. a renumbered scan).
        config: settings.
        initial_transform: start from this transform (baseline -> follow-up) instead of centroids + axes.
        body_mask: boolean body mask of this level on the baseline grid (default: from
            :func:`spinekit.register.body.baseline_bodies`, computed only when needed).

    Returns:
        the transform (baseline point -> follow-up point) and diagnostics; quality is judged separately by
        :func:`spinekit.register.quality.assess_registration`.

    Raises:
        InputError: when either mask is empty.
    """
    config = config or RegistrationConfig()
    start = time.perf_counter()
    fixed_mask, fixed_distance, moving_mask, moving_distance = prepare_distance_maps(
        baseline_spine, followup_spine, label, followup_label, config
    )
    band = _band_mask(fixed_distance, config)
    method = _method(config)
    if initial_transform is not None:
        initial = _as_euler(initial_transform, principal_axes(fixed_mask)[0])
        chosen = "given"
    else:
        initial, chosen = _initialise(method, band, fixed_mask, fixed_distance, moving_mask, moving_distance)

    method.SetMetricFixedMask(band)
    transform = _refine(method, fixed_distance, moving_distance, initial)
    voxel = max(fixed_mask.GetSpacing())
    trim_mm = max(config.trim_mm, 0.75 * voxel)
    trimmed, changed_fraction = _trim_band(fixed_distance, moving_distance, band, transform, trim_mm, config)
    strategy = "whole vertebra, trimmed"
    body = None
    if changed_fraction > config.changed_body_fraction:
        body = _body_crop(baseline_spine, label, fixed_mask, body_mask)
    if body is not None:
        # Much of the surface moved: a collapsed or remodelled body biases any fit that includes it (also a trimmed
        # one, since a compressed body also bulges at its walls), so fit on the posterior elements alone.
        band = _without_body(band, body, config.body_margin_mm)
        method.SetMetricFixedMask(band)
        transform = _refine(method, fixed_distance, moving_distance, transform)
        _, changed_fraction = _trim_band(fixed_distance, moving_distance, band, transform, trim_mm, config)
        strategy = "posterior elements (body changed)"
    else:
        for _ in range(config.trim_rounds):
            if changed_fraction <= 0.0 or changed_fraction > config.max_changed_fraction:
                break
            method.SetMetricFixedMask(trimmed)
            transform = _refine(method, fixed_distance, moving_distance, transform)
            band = trimmed
            trimmed, changed_fraction = _trim_band(fixed_distance, moving_distance, band, transform, trim_mm, config)
    method.SetMetricFixedMask(band)
    method.SetInitialTransform(transform, inPlace=False)
    metric = float(method.MetricEvaluate(fixed_distance, moving_distance))
    fitted, everywhere = _surface_residuals(fixed_distance, moving_distance, band, transform, config)
    seconds = time.perf_counter() - start
    log.info("%s registered in %.2f s (init %s, changed %.0f%%)", VERTEBRA_NAMES.get(label), seconds, chosen,
             100 * changed_fraction)  # fmt: skip
    return VertebraRegistration(
        label=label,
        transform=transform,
        initial_transform=initial,
        metric=metric,
        changed_fraction=changed_fraction,
        residual_mean_mm=float(np.mean(fitted)) if fitted.size else np.nan,
        residual_p95_mm=float(np.percentile(fitted, 95)) if fitted.size else np.nan,
        residual_all_mean_mm=float(np.mean(everywhere)) if everywhere.size else np.nan,
        seconds=seconds,
        initialisation=chosen,
        followup_label=followup_label or label,
        details={"trim_mm": trim_mm, "strategy": strategy},
    )


def _method(config: RegistrationConfig) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    # Gradients on the fly: precomputing gradient images costs more than it saves on a small crop.
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(config.sampling_fraction, config.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=config.learning_rate_mm,
        minStep=config.min_step_mm,
        numberOfIterations=config.iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(config.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(config.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _band_mask(fixed_distance: sitk.Image, config: RegistrationConfig) -> sitk.Image:
    return sitk.Cast(
        (fixed_distance >= -config.band_inside_mm) & (fixed_distance <= config.band_outside_mm), sitk.sitkUInt8
    )


def _initialise(
    method: sitk.ImageRegistrationMethod,
    band: sitk.Image,
    fixed_mask: sitk.Image,
    fixed_distance: sitk.Image,
    moving_mask: sitk.Image,
    moving_distance: sitk.Image,
) -> tuple[sitk.Euler3DTransform, str]:
    """Centroid match plus the best of the identity and the principal-axes rotations (scored by the metric)."""
    fixed_centroid, fixed_axes, _ = principal_axes(fixed_mask)
    moving_centroid, moving_axes, _ = principal_axes(moving_mask)
    candidates: list[tuple[str, np.ndarray]] = [("identity", np.eye(3))]
    for signs in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
        rotation = moving_axes @ np.diag(signs) @ fixed_axes.T
        name = "axes" + "".join("+" if s > 0 else "-" for s in signs)
        candidates.append((name, rotation))
    method.SetMetricFixedMask(band)
    best: tuple[float, str, sitk.Euler3DTransform] | None = None
    for name, rotation in candidates:
        transform = sitk.Euler3DTransform()
        transform.SetCenter(tuple(fixed_centroid))
        transform.SetMatrix(tuple(rotation.ravel()), 1e-4)
        transform.SetTranslation(tuple(moving_centroid - fixed_centroid))
        method.SetInitialTransform(transform, inPlace=False)
        try:
            value = method.MetricEvaluate(fixed_distance, moving_distance)
        except RuntimeError:
            continue
        if best is None or value < best[0]:
            best = (value, name, transform)
    if best is None:
        raise InputError("no initial alignment overlaps the follow-up vertebra; the masks are too far apart")
    return best[2], best[1]


def _refine(
    method: sitk.ImageRegistrationMethod,
    fixed_distance: sitk.Image,
    moving_distance: sitk.Image,
    initial: sitk.Euler3DTransform,
) -> sitk.Euler3DTransform:
    method.SetInitialTransform(sitk.Euler3DTransform(initial), inPlace=False)
    try:
        result = method.Execute(fixed_distance, moving_distance)
    except RuntimeError as exc:
        log.warning("registration stopped early (%s); keeping the previous transform", str(exc).splitlines()[-1])
        return initial
    return _as_euler(result, np.asarray(initial.GetCenter()))


def _as_euler(transform: sitk.Transform, center: np.ndarray) -> sitk.Euler3DTransform:
    """Flatten a (composite) rigid transform into one Euler3DTransform about ``center``."""
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0)
    transform = transform.Downcast() if hasattr(transform, "Downcast") else transform
    if isinstance(transform, sitk.Euler3DTransform):
        return sitk.Euler3DTransform(transform)
    center = np.asarray(center, dtype=float)
    origin = np.asarray(transform.TransformPoint(tuple(center)))
    columns = [np.asarray(transform.TransformPoint(tuple(center + e))) - origin for e in np.eye(3)]
    matrix = np.stack(columns, axis=1)
    u, _, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    euler = sitk.Euler3DTransform()
    euler.SetCenter(tuple(center))
    euler.SetMatrix(tuple(rotation.ravel()), 1e-4)
    euler.SetTranslation(tuple(origin - center))
    return euler


def _trim_band(
    fixed_distance: sitk.Image,
    moving_distance: sitk.Image,
    band: sitk.Image,
    transform: sitk.Transform,
    trim_mm: float,
    config: RegistrationConfig,
) -> tuple[sitk.Image, float]:
    """Band without the neighbourhood of baseline surface points that stay far from the follow-up surface."""
    clip = config.distance_clip_mm
    moved = sitk.Resample(moving_distance, fixed_distance, transform, sitk.sitkLinear, clip)
    fixed = sitk.GetArrayViewFromImage(fixed_distance)
    residual = np.abs(sitk.GetArrayViewFromImage(moved))
    voxel = max(fixed_distance.GetSpacing())
    surface = np.abs(fixed) <= 0.5 * voxel + 1e-6
    if not surface.any():
        return band, 0.0
    changed = surface & (residual > trim_mm)
    changed_fraction = float(changed.sum() / surface.sum())
    if not changed.any():
        return band, 0.0
    changed_image = sitk.GetImageFromArray(changed.astype(np.uint8))
    changed_image.CopyInformation(fixed_distance)
    near_changed = sitk.SignedMaurerDistanceMap(
        changed_image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    keep = sitk.Cast(band, sitk.sitkUInt8) * sitk.Cast(near_changed > config.trim_dilate_mm, sitk.sitkUInt8)
    return keep, changed_fraction


def _body_crop(
    baseline_spine: Volume | sitk.Image, label: int, fixed_mask: sitk.Image, body_mask: np.ndarray | None
) -> sitk.Image | None:
    """The baseline body mask on the crop grid, or None when the body cannot be separated."""
    spine = baseline_spine if isinstance(baseline_spine, Volume) else Volume.from_sitk(baseline_spine)
    if body_mask is None:
        from spinekit.register.body import baseline_bodies

        try:
            body = baseline_bodies(spine, [label]).get(label)
        except Exception as exc:  # noqa: BLE001 - any failure only means "no body split", reported below
            log.warning("no body mask for %s (%s); fitting the whole vertebra", VERTEBRA_NAMES.get(label), exc)
            return None
        if body is None or body.mask is None:
            return None
        body_mask = body.mask
    body_mask = np.asarray(body_mask, dtype=bool)
    if not body_mask.any():
        return None
    body = spine.with_array(body_mask.astype(np.uint8)).to_sitk()
    return sitk.Resample(body, fixed_mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _without_body(band: sitk.Image, body: sitk.Image, margin_mm: float) -> sitk.Image:
    near_body = sitk.SignedMaurerDistanceMap(body, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.Cast(band, sitk.sitkUInt8) * sitk.Cast(near_body > margin_mm, sitk.sitkUInt8)


def _surface_residuals(
    fixed_distance: sitk.Image,
    moving_distance: sitk.Image,
    band: sitk.Image,
    transform: sitk.Transform,
    config: RegistrationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """|follow-up distance| at baseline surface voxels after registration: in the fitted band, and everywhere."""
    moved = sitk.Resample(moving_distance, fixed_distance, transform, sitk.sitkLinear, config.distance_clip_mm)
    residual = np.abs(sitk.GetArrayViewFromImage(moved))
    surface = np.abs(sitk.GetArrayViewFromImage(fixed_distance)) <= 0.5 * max(fixed_distance.GetSpacing()) + 1e-6
    fitted = surface & (sitk.GetArrayViewFromImage(band) > 0)
    return residual[fitted], residual[surface]
