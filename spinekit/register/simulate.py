"""Simulate a follow-up scan from any baseline label map, with the exact truth of what changed.

No baseline/follow-up pair with expert labels is available (see ``../shared/data/README.md``), so accuracy is
measured on synthetic follow-ups built from real label maps: every vertebra gets its own rigid motion, a chosen
vertebral body can collapse along its own superior axis (crush or anterior wedge), and a spherical lesion can grow.
The collapsed body is the one the change measures use (:func:`spinekit.register.body.baseline_bodies`): everything
of the vertebra in front of the morphometry body's cut plane is compressed by its fraction, nothing behind the plane
but a taper, so the truth ("fraction x baseline height") and the measured loss refer to the same bone.

Each label is moved through its signed distance map (linear interpolation, then thresholded at 0), which resamples
the shape without the staircase bias of nearest-neighbour label resampling. Overlapping vertebrae (large independent
motions) are resolved by the deepest-inside rule. Non-vertebra labels (discs, canal) are not carried over.

Truth transforms follow the package convention (:mod:`spinekit.register`): they map a baseline LPS point to the
follow-up LPS point, ``q = R (p - c) + c + t`` with ``c`` the rotation centre (default the vertebra centroid).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from spinekit.errors import InputError
from spinekit.io import Volume
from spinekit.labels import VERTEBRA_NAMES, is_vertebra
from spinekit.register.geometry import (
    crop_to_label,
    label_centroid_lps,
    region_around_lps_box,
    signed_distance,
)

log = logging.getLogger(__name__)

#: Signed distances are clipped here (mm); beyond it only the sign matters for thresholding.
DISTANCE_CLIP_MM = 8.0
#: Behind the body's cut plane (one voxel behind, see :func:`_collapse_field`) the collapse fades out over this
#: distance (mm), so the pedicles and the rest of the posterior elements stay put.
COLLAPSE_TAPER_MM = 1.0


@dataclass(frozen=True)
class RigidMotion:
    """Rigid motion of one vertebra from baseline to follow-up.

    Attributes:
        rotation_deg: Euler angles (deg) about the LPS x, y, z axes, applied as :class:`sitk.Euler3DTransform` does.
        translation_mm: translation (LPS mm) applied after the rotation.
        center_lps: rotation centre; ``None`` = the vertebra's centroid in the baseline.
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    center_lps: tuple[float, float, float] | None = None

    def transform(self, default_center: np.ndarray) -> sitk.Euler3DTransform:
        """The motion as a baseline-to-follow-up point transform."""
        center = np.asarray(self.center_lps if self.center_lps is not None else default_center, dtype=float)
        angles = np.deg2rad(np.asarray(self.rotation_deg, dtype=float))
        transform = sitk.Euler3DTransform(tuple(center), *angles.tolist(), tuple(float(t) for t in self.translation_mm))
        return transform


@dataclass(frozen=True)
class Collapse:
    """Height loss of one vertebral body, as a fraction of its baseline height.

    ``anterior`` and ``posterior`` are the fractions at the anterior and posterior walls, interpolated linearly in
    between (equal values: crush; anterior > posterior: wedge). The body is compressed along its own superior axis
    towards the level ``anchor`` (-1 inferior endplate, 0 body centroid, +1 superior endplate: ``anchor=-1`` is a
    superior-endplate fracture, the common type); the posterior elements do not move.
    """

    label: int
    anterior: float
    posterior: float | None = None
    anchor: float = 0.0

    @property
    def posterior_fraction(self) -> float:
        return self.anterior if self.posterior is None else self.posterior

    def fraction_at(self, position: float) -> float:
        """Fraction at a relative antero-posterior position (0 = posterior wall, 1 = anterior wall)."""
        return float(np.interp(position, [0.0, 1.0], [self.posterior_fraction, self.anterior]))


@dataclass(frozen=True)
class Lesion:
    """A spherical lesion in a vertebral body that grows between the scans.

    ``center_lps`` is the baseline centre (``None`` = the body centroid); the follow-up lesion moves with its vertebra.
    ``intensity`` is written into the simulated images inside the lesion (e.g. 20 HU for a lytic lesion).
    """

    label: int
    baseline_radius_mm: float
    followup_radius_mm: float
    center_lps: tuple[float, float, float] | None = None
    intensity: float | None = None


@dataclass
class SimulatedFollowup:
    """A simulated follow-up with its truth.

    Attributes:
        spine: follow-up vertebra label map (on ``grid`` or the baseline grid).
        transforms: truth, per level: baseline LPS point -> follow-up LPS point.
        image: follow-up image when a baseline image was given.
        lesions: follow-up lesion map (value = vertebra label) when lesions were simulated.
        baseline_lesions: the matching baseline lesion map.
        baseline_image: the baseline image with the baseline lesions painted in (when lesions carry an intensity).
        collapses: the simulated collapses by level.
    """

    spine: Volume
    transforms: dict[int, sitk.Transform]
    image: Volume | None = None
    lesions: Volume | None = None
    baseline_lesions: Volume | None = None
    baseline_image: Volume | None = None
    collapses: dict[int, Collapse] = field(default_factory=dict)


def random_motions(
    labels: Iterable[int],
    rng: np.random.Generator,
    max_rotation_deg: float = 10.0,
    max_translation_mm: float = 15.0,
    independent_rotation_deg: float = 3.0,
    independent_translation_mm: float = 3.0,
    center_lps: np.ndarray | None = None,
) -> dict[int, RigidMotion]:
    """Per-vertebra motions: one shared repositioning plus an independent part per vertebra.

    Every vertebra moves by up to ``max_rotation_deg`` / ``max_translation_mm`` in total (about the shared
    ``center_lps``, e.g. the spine's centre, then its own small motion about its centroid is folded into the
    translation), which reproduces patient repositioning plus changed intersegmental posture without vertebrae
    running into each other.
    """
    labels = list(labels)
    shared_rot = rng.uniform(-1, 1, 3) * (max_rotation_deg - independent_rotation_deg) / np.sqrt(3)
    shared_trans = _random_vector(rng, max_translation_mm - independent_translation_mm)
    motions = {}
    for label in labels:
        rot = shared_rot + rng.uniform(-1, 1, 3) * independent_rotation_deg / np.sqrt(3)
        trans = shared_trans + _random_vector(rng, independent_translation_mm)
        motions[label] = RigidMotion(
            tuple(rot.tolist()), tuple(trans.tolist()), None if center_lps is None else tuple(center_lps)
        )
    return motions


def _random_vector(rng: np.random.Generator, max_norm: float) -> np.ndarray:
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return direction * rng.uniform(0.5, 1.0) * max(max_norm, 0.0)


def simulate_followup(
    baseline_spine: Volume,
    motions: Mapping[int, RigidMotion],
    *,
    image: Volume | None = None,
    collapses: Iterable[Collapse] = (),
    lesions: Iterable[Lesion] = (),
    grid: Volume | None = None,
    background_motion: RigidMotion | None = None,
    drop_levels: Iterable[int] = (),
) -> SimulatedFollowup:
    """Move, collapse and grow lesions in a baseline label map (and image) to make a follow-up with known truth.

    Args:
        baseline_spine: label map with VerSe vertebra labels.
        motions: rigid motion per level; levels without one stay in place.
        image: baseline image on the same grid; the follow-up image is synthesised from it (vertebrae carried by
            their own motion, everything else by ``background_motion``).
        collapses: vertebral bodies to collapse (needs :mod:`spinekit.morphometry` for the body and its frame).
        lesions: spherical lesions to grow.
        grid: follow-up grid (default: the baseline grid).
        background_motion: motion of the non-vertebra image content (default: none).
        drop_levels: levels left out of the follow-up (e.g. outside its field of view).
    """
    grid = grid if grid is not None else baseline_spine
    collapses = {c.label: c for c in collapses}
    lesions = list(lesions)
    dropped = set(drop_levels)
    levels = [int(v) for v in np.unique(baseline_spine.array) if is_vertebra(int(v))]
    if not levels:
        raise InputError("the baseline label map has no vertebra labels (VerSe 1-28); nothing to simulate")
    for label in [*collapses, *(lesion.label for lesion in lesions)]:
        if label not in levels:
            raise InputError(f"cannot collapse or add a lesion to {VERTEBRA_NAMES.get(label, label)}: not in the map")

    frames = _body_frames(baseline_spine, set(collapses) | {les.label for les in lesions if les.center_lps is None})
    best = np.full(grid.array.shape, np.inf, dtype=np.float32)
    labels_out = np.zeros(grid.array.shape, dtype=np.int16)
    patches: dict[int, tuple[tuple[slice, ...], np.ndarray]] = {}
    transforms: dict[int, sitk.Transform] = {}
    for label in levels:
        mask = baseline_spine.to_sitk() == label
        centroid = label_centroid_lps(mask)
        motion = motions.get(label, RigidMotion())
        transform = motion.transform(centroid)
        transforms[label] = transform
        if label in dropped:
            continue
        crop = crop_to_label(mask, margin_mm=DISTANCE_CLIP_MM + 2.0)
        distance = signed_distance(crop, clip_mm=DISTANCE_CLIP_MM)
        collapse_field = None
        if label in collapses:
            collapse_field = _collapse_field(distance, collapses[label], frames[label])
            distance = sitk.Resample(distance, distance, collapse_field, sitk.sitkLinear, DISTANCE_CLIP_MM)
        region = region_around_lps_box(grid, _moved_corners(distance, transform))
        if region is None:
            continue
        slices, reference = region
        moved = sitk.Resample(distance, reference, transform.GetInverse(), sitk.sitkLinear, DISTANCE_CLIP_MM)
        moved_array = sitk.GetArrayFromImage(moved)
        take = (moved_array < 0) & (moved_array < best[slices])
        best[slices][take] = moved_array[take]
        labels_out[slices][take] = label
        if image is not None:
            source = image.to_sitk()
            chain = sitk.CompositeTransform([collapse_field, transform.GetInverse()]) if collapse_field else None
            carried = sitk.Resample(
                source, reference, chain or transform.GetInverse(), sitk.sitkLinear, float(image.array.min())
            )
            patches[label] = (slices, sitk.GetArrayFromImage(carried))

    followup_spine = grid.with_array(labels_out)
    result = SimulatedFollowup(followup_spine, transforms, collapses=collapses)
    if image is not None:
        bone = baseline_spine.with_array(np.isin(baseline_spine.array, levels).astype(np.uint8))
        result.image = _followup_image(image, bone, grid, labels_out, patches, background_motion)
        result.baseline_image = image
    if lesions:
        _add_lesions(result, baseline_spine, lesions, frames)
    return result


def _moved_corners(image: sitk.Image, transform: sitk.Transform) -> np.ndarray:
    size = np.asarray(image.GetSize()) - 1
    corners = [
        image.TransformContinuousIndexToPhysicalPoint(tuple(float(c) for c in size * np.array(bits)))
        for bits in np.ndindex(2, 2, 2)
    ]
    return np.array([transform.TransformPoint(c) for c in corners])


def _followup_image(
    image: Volume,
    bone: Volume,
    grid: Volume,
    labels_out: np.ndarray,
    patches: dict[int, tuple[tuple[slice, ...], np.ndarray]],
    background_motion: RigidMotion | None,
) -> Volume:
    source = image.to_sitk()
    centre = image.index_to_lps((np.asarray(image.shape_ijk) - 1) / 2.0)
    background = (background_motion or RigidMotion()).transform(centre)
    out = sitk.GetArrayFromImage(
        sitk.Resample(source, grid.to_sitk(), background.GetInverse(), sitk.sitkLinear, float(image.array.min()))
    ).astype(np.float32)
    # Bone that moved away leaves soft tissue behind: fill it with the median of the non-bone background.
    was_bone = (
        sitk.GetArrayFromImage(
            sitk.Resample(bone.to_sitk(), grid.to_sitk(), background.GetInverse(), sitk.sitkNearestNeighbor, 0)
        )
        > 0
    )
    soft = float(np.median(out[(labels_out == 0) & ~was_bone])) if ((labels_out == 0) & ~was_bone).any() else 0.0
    out[was_bone & (labels_out == 0)] = soft
    for label, (slices, values) in patches.items():
        inside = labels_out[slices] == label
        out[slices][inside] = values[inside]
    return grid.with_array(out.astype(image.array.dtype, copy=False))


def _body_frames(spine: Volume, levels: set[int]) -> dict[int, dict]:
    """Body centroid, compression axes and wall positions of the morphometry bodies (:mod:`.body`).

    The anterior axis is the normal of the body's cut plane and the walls are measured along it from the body
    centroid, with the posterior wall at the cut itself: a collapse then compresses exactly the bone that the change
    measures call the body (in front of the same plane), and nothing behind it but the taper.
    """
    if not levels:
        return {}
    try:
        from spinekit.register.body import baseline_bodies
    except ImportError as exc:
        raise InputError(
            f"collapse and body lesions need spinekit.morphometry (body mask and vertebra frame): {exc}"
        ) from None
    bodies = baseline_bodies(spine, levels)
    out = {}
    for label in levels:
        name = VERTEBRA_NAMES.get(label, label)
        if label not in bodies:
            raise InputError(f"no vertebra frame for {name}; cannot place a collapse")
        body = bodies[label]
        if body.mask is None or not body.mask.any():
            raise InputError(f"the body of {name} cannot be separated ({body.flag}); cannot collapse it")
        points = spine.index_to_lps(np.argwhere(body.mask)[:, ::-1].astype(float))
        center = points.mean(axis=0)
        anterior = body.cut.normal
        # Compressing along the frame's superior axis made orthogonal to the cut's normal keeps every point's depth
        # in front of the cut, so the collapse never moves bone across the plane (the two differ by a few degrees).
        superior = np.asarray(body.frame.superior, dtype=float)
        superior = superior - np.dot(superior, anterior) * anterior
        superior /= np.linalg.norm(superior)
        y = (points - center) @ anterior
        z = (points - center) @ superior
        cut = float(body.cut.offset_mm - center @ anterior) if np.isfinite(body.cut.offset_mm) else float(y.min())
        out[label] = {
            "center": center,
            "superior": superior,
            "anterior": anterior,
            "posterior_wall": cut,
            "anterior_wall": float(np.percentile(y, 99)),
            "inferior_endplate": float(np.percentile(z, 1)),
            "superior_endplate": float(np.percentile(z, 99)),
            # Spacing along the cut's normal: the displacement field is linear between voxel centres, so the
            # taper must end this far behind the cut for the whole body in front of it to be compressed fully.
            "voxel_mm": float(np.linalg.norm(np.asarray(spine.spacing) * (spine.direction.T @ anterior))),
        }
    return out


def _collapse_field(distance: sitk.Image, collapse: Collapse, frame: dict) -> sitk.Transform:
    """Displacement field that pulls each collapsed-body point back to where it came from in the baseline.

    The fraction is full in front of ``posterior_wall - voxel`` and fades to none over :data:`COLLAPSE_TAPER_MM`
    behind it, so every point in front of the body's cut is compressed by exactly its fraction after the field's
    linear interpolation between voxel centres.
    """
    size = distance.GetSize()
    kk, jj, ii = np.meshgrid(*(np.arange(n, dtype=float) for n in size[::-1]), indexing="ij")
    ijk = np.stack([ii, jj, kk], axis=-1)
    origin = np.asarray(distance.GetOrigin())
    direction = np.asarray(distance.GetDirection()).reshape(3, 3)
    points = origin + (ijk * np.asarray(distance.GetSpacing())) @ direction.T
    rel = points - frame["center"]
    y = rel @ frame["anterior"]
    z = rel @ frame["superior"]
    depth = max(frame["anterior_wall"] - frame["posterior_wall"], 1e-3)
    position = (y - frame["posterior_wall"]) / depth
    fraction = np.interp(position, [0.0, 1.0], [collapse.posterior_fraction, collapse.anterior])
    behind = frame["posterior_wall"] - frame.get("voxel_mm", 0.0)
    fade = np.clip((y - behind + COLLAPSE_TAPER_MM) / COLLAPSE_TAPER_MM, 0.0, 1.0)
    fraction = np.clip(fraction * fade, 0.0, 0.9)
    level = frame["superior_endplate"] if collapse.anchor > 0 else -frame["inferior_endplate"]
    z_anchor = collapse.anchor * level
    dz = (z - z_anchor) / (1.0 - fraction) - (z - z_anchor)
    displacement = dz[..., None] * frame["superior"]
    field_image = sitk.GetImageFromArray(displacement.astype(np.float64), isVector=True)
    field_image.CopyInformation(distance)
    return sitk.DisplacementFieldTransform(field_image)


def _add_lesions(result: SimulatedFollowup, baseline_spine: Volume, lesions: list[Lesion], frames: dict) -> None:
    grid = result.spine
    base = np.zeros(baseline_spine.array.shape, dtype=np.int16)
    follow = np.zeros(grid.array.shape, dtype=np.int16)
    base_image = None if result.baseline_image is None else result.baseline_image.array.astype(np.float32).copy()
    follow_image = None if result.image is None else result.image.array.astype(np.float32).copy()
    base_points = _grid_points(baseline_spine)
    follow_points = _grid_points(grid)
    for lesion in lesions:
        center = np.asarray(lesion.center_lps if lesion.center_lps is not None else frames[lesion.label]["center"])
        moved = np.asarray(result.transforms[lesion.label].TransformPoint(tuple(float(c) for c in center)))
        inside_base = (np.linalg.norm(base_points - center, axis=-1) <= lesion.baseline_radius_mm) & (
            baseline_spine.array == lesion.label
        )
        inside_follow = (np.linalg.norm(follow_points - moved, axis=-1) <= lesion.followup_radius_mm) & (
            grid.array == lesion.label
        )
        base[inside_base] = lesion.label
        follow[inside_follow] = lesion.label
        if lesion.intensity is not None:
            if base_image is not None:
                base_image[inside_base] = lesion.intensity
            if follow_image is not None:
                follow_image[inside_follow] = lesion.intensity
    result.baseline_lesions = baseline_spine.with_array(base)
    result.lesions = grid.with_array(follow)
    if base_image is not None:
        result.baseline_image = result.baseline_image.with_array(base_image)
    if follow_image is not None:
        result.image = result.image.with_array(follow_image)


def _grid_points(volume: Volume) -> np.ndarray:
    kk, jj, ii = np.meshgrid(*(np.arange(n, dtype=float) for n in volume.array.shape), indexing="ij")
    return volume.index_to_lps(np.stack([ii, jj, kk], axis=-1))
