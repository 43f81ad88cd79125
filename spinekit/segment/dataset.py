"""Training samples: label-map sources (phantoms, real label maps), partial labels, patch sampling.

Every source yields a :class:`LabelMap` on the working grid (LPS, isotropic): generation labels for synthesis (as
many tissues as the source knows), the target classes of the task, and the classes the source does NOT label
(``unknown``). Unknown classes are handled with the marginal loss of Shi et al. 2021 (Med Image Anal 70:101979):
a voxel labelled background in such a source may belong to any unknown class. A target value >= n_classes indexes
an extra ambiguity set (e.g. TotalSegmentator's "autochthon" = multifidus or erector spinae).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from spinekit import labels as lb
from spinekit.errors import InputError
from spinekit.io import Volume, read_labels, read_volume, reorient, resample_like, resample_to_spacing
from spinekit.segment.networks import TaskConfig
from spinekit.segment.synthesis import (
    TISSUES,
    SynthesisSettings,
    normalise_real,
    random_affine_labels,
    synthesize_image,
)

log = logging.getLogger(__name__)

#: Generation-label offsets that keep tissues of different maps apart.
MUSCLE_GEN_OFFSET = 150
BODY_GEN = 250
FAT_GEN = 251
SOFT_GEN = 252
DISC_GEN_OFFSET = 300
TISSUE_GEN_OFFSET = 400
#: Posterior elements of phantom vertebra n get generation label POSTERIOR_GEN_OFFSET + n: own intensity in the
#: random-contrast branch (in MRI they are cortex-rich and darker than the body's marrow), target still vertebra n.
POSTERIOR_GEN_OFFSET = 470


@dataclass
class LabelMap:
    """One training subject on the working grid.

    Attributes:
        name: source name (used for hold-out).
        generation: generation labels (int32) for synthesis.
        target: class indices; values >= n_classes index ``extra_sets``.
        unknown: classes this source does not label (merged with background in the loss).
        extra_sets: ambiguity sets for target values n_classes, n_classes + 1, ...
        image: a real or phantom image (normalised) on the same grid, mixed into training when present.
        bright: generation labels that are bone (CT-like contrast prior).
        tissue_lut: tissue class (index into ``synthesis.TISSUES``, -1 unknown) per generation label; enables the
            Hounsfield-unit CT synthesis branch.
        image_fraction: share of this source's samples that show its real image (None: the run's setting).
        sample_weight: sampling weight relative to one phantom (None: the run's weight for real label maps).
    """

    name: str
    generation: np.ndarray
    target: np.ndarray
    unknown: tuple[int, ...] = ()
    extra_sets: tuple[tuple[int, ...], ...] = ()
    image: np.ndarray | None = None
    bright: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tissue_lut: np.ndarray | None = None
    image_fraction: float | None = None
    sample_weight: float | None = None


def _lut(mapping: dict[str, list[int] | range]) -> np.ndarray:
    """Tissue table from ``{tissue: generation labels}`` (generation labels above 511 are not used)."""
    lut = np.full(512, -1, dtype=np.int64)
    lut[0] = TISSUES.index("air")
    for name, values in mapping.items():
        lut[np.asarray(list(values), dtype=np.int64)] = TISSUES.index(name)
    return lut


#: Shared generation labels of every source (offsets above).
_COMMON_TISSUES = {
    "muscle": range(MUSCLE_GEN_OFFSET + 1, MUSCLE_GEN_OFFSET + 11),
    "body": [BODY_GEN],
    "fat": [FAT_GEN],
    "soft": [SOFT_GEN],
    "disc": [DISC_GEN_OFFSET],
}
#: Our spine labels (spinekit.labels) as generation labels: vertebrae, canal, cord, discs.
OUR_SPINE_TISSUES = _lut(
    {
        **_COMMON_TISSUES,
        "bone": range(1, 29),
        "fluid": [lb.CANAL],
        "cord": [lb.CORD],
        "disc": [*range(lb.DISC_OFFSET + 1, lb.DISC_OFFSET + 29), DISC_GEN_OFFSET],
        # spinekit.phantom tissue codes (shapes.py: AIR, FAT, SOFT, CSF, ANNULUS, NUCLEUS, CORTICAL, TRABECULAR,
        # POSTERIOR, LYTIC, BLASTIC = 0..10; muscles 20 + label)
        "fat": [FAT_GEN, TISSUE_GEN_OFFSET + 1],
        "soft": [SOFT_GEN, TISSUE_GEN_OFFSET + 2, TISSUE_GEN_OFFSET + 9],
        "cortical": [TISSUE_GEN_OFFSET + 6, TISSUE_GEN_OFFSET + 10],
        "trabecular": [TISSUE_GEN_OFFSET + 7, TISSUE_GEN_OFFSET + 8],
        "muscle": [*range(MUSCLE_GEN_OFFSET + 1, MUSCLE_GEN_OFFSET + 11), *range(TISSUE_GEN_OFFSET + 20, 512)],
    }
)
OUR_SPINE_TISSUES[TISSUE_GEN_OFFSET + 3] = TISSUES.index("fluid")
OUR_SPINE_TISSUES[[TISSUE_GEN_OFFSET + 4, TISSUE_GEN_OFFSET + 5]] = TISSUES.index("disc")
OUR_SPINE_TISSUES[POSTERIOR_GEN_OFFSET + 1 : POSTERIOR_GEN_OFFSET + 29] = TISSUES.index("bone")
#: TotalSegmentator v2 "total" classes (Wasserthal et al. 2023, class map of totalsegmentator/map_to_binary.py).
TOTALSEG_TISSUES = _lut(
    {
        **_COMMON_TISSUES,
        "organ": [1, 2, 3, 4, 5, 7, 8, 9, 17, 21, 22, 23, 24, 51, 90],
        "bowel": [6, 15, 18, 19, 20],
        "lung": range(10, 15),
        "air": [16],
        "bone": [*range(25, 51), *range(69, 79), 91, *range(92, 117)],
        "vessel": range(52, 69),
        "cord": [79],
        "muscle": [*range(80, 90), *range(MUSCLE_GEN_OFFSET + 1, MUSCLE_GEN_OFFSET + 11)],
        "cartilage": [117],
    }
)


def membership(config: TaskConfig, sample: LabelMap) -> np.ndarray:
    """Matrix ``(n_classes + n_extra, n_classes)``: row t = classes a voxel with target t may belong to."""
    n = config.n_classes
    matrix = np.zeros((n + len(sample.extra_sets), n), dtype=np.float32)
    matrix[np.arange(n), np.arange(n)] = 1.0
    for c in sample.unknown:
        matrix[0, c] = 1.0
    for row, classes in enumerate(sample.extra_sets):
        matrix[n + row, list(classes)] = 1.0
    return matrix


def to_working_grid(volume: Volume, spacing_mm: float, is_label: bool) -> Volume:
    """Canonical LPS orientation at isotropic ``spacing_mm`` (the grid the networks see)."""
    return resample_to_spacing(reorient(volume, "LPS"), (spacing_mm,) * 3, is_label=is_label)


def spine_targets(spine: np.ndarray) -> np.ndarray:
    """Our spine labels (VerSe vertebrae, discs 1xx, canal 60, cord 61) to spine classes."""
    target = np.zeros(spine.shape, dtype=np.int16)
    vertebra = np.isin(spine, [v for v in lb.VERTEBRA_NAMES if v != lb.SACRUM])
    target[vertebra] = 1
    target[spine == lb.SACRUM] = 2
    target[(spine > lb.DISC_OFFSET) & (spine < lb.DISC_OFFSET + 30)] = 3
    target[np.isin(spine, [lb.CANAL, lb.CORD])] = 4
    return target


def muscle_targets(muscles: np.ndarray) -> np.ndarray:
    """Our muscle labels to side-agnostic classes (1 psoas, 2 QL, 3 multifidus, 4 erector spinae; autochthon -> 5)."""
    target = np.zeros(muscles.shape, dtype=np.int16)
    for value in range(1, 11):
        target[muscles == value] = (value + 1) // 2
    return target


def _body_mask(image: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    if np.ptp(smooth) <= 0:
        return np.zeros(image.shape, dtype=bool)
    mask = smooth > threshold_otsu(smooth)
    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))


def from_phantom(phantom, config: TaskConfig, name: str = "phantom") -> LabelMap:
    """A phantom (``spinekit.phantom``) as a label map with its own image mixed in."""
    spine = to_working_grid(phantom.spine, config.spacing_mm, True)
    muscles = (
        resample_like(phantom.muscles, spine, is_label=True).array.astype(np.int32)
        if phantom.muscles is not None
        else None
    )
    image = resample_like(phantom.image, spine).array
    generation = spine.array.astype(np.int32).copy()
    if muscles is not None:
        free = generation == 0
        generation[free & (muscles > 0)] = MUSCLE_GEN_OFFSET + muscles[free & (muscles > 0)]
    from spinekit.phantom.shapes import POSTERIOR

    tissue = getattr(phantom, "tissue", None)
    if isinstance(tissue, Volume):  # the phantom's own tissue classes (fat, muscle, organs) as generation labels
        tissue_grid = resample_like(tissue, spine, is_label=True).array.astype(np.int32)
        free = (generation == 0) & (tissue_grid > 0)
        generation[free] = TISSUE_GEN_OFFSET + tissue_grid[free]
        posterior = lb.vertebra_mask(spine.array, sacrum=True) & (tissue_grid == POSTERIOR)
        generation[posterior] = POSTERIOR_GEN_OFFSET + spine.array[posterior].astype(np.int32)
    generation[(generation == 0) & _body_mask(image)] = BODY_GEN
    levels = np.array(list(lb.VERTEBRA_NAMES), dtype=np.int64)
    bright = np.concatenate([levels, POSTERIOR_GEN_OFFSET + levels])
    if config.task == "spine":
        target = spine_targets(spine.array)
    else:
        target = muscle_targets(muscles if muscles is not None else np.zeros_like(spine.array))
    return LabelMap(name, generation, target, image=normalise_real(image), bright=bright, tissue_lut=OUR_SPINE_TISSUES)


def real_sources(
    data_dir: Path, config: TaskConfig, holdout: tuple[str, ...] = (), sagittal_weight: float | None = None
) -> list[LabelMap]:
    """Label maps from ``../shared/data`` (whatever is present), skipping the names in ``holdout``;
    ``sagittal_weight``: the sampling weight of all sagittal MRI slices together (None: ``sagittal2d.TOTAL_WEIGHT``)."""
    from functools import partial

    from spinekit.segment.sagittal2d import TOTAL_WEIGHT
    from spinekit.segment.sagittal2d import training_sources as sagittal_slices

    loaders: dict[str, Callable[[Path, TaskConfig], LabelMap | list[LabelMap] | None]] = {
        "ct_lumbar_3mm": _ct_lumbar,
        "ct_dicom_t11_t12": _ct_dicom,
        "verse004_labels": _verse004,
        "mri_axial_dixon_L2L5": _dixon,
        "mri_sagittal_2d": partial(sagittal_slices, total_weight=sagittal_weight or TOTAL_WEIGHT),
    }
    maps = []
    for name, loader in loaders.items():
        folder = Path(data_dir) / name
        if name in holdout or not folder.is_dir():
            continue
        try:
            sample = loader(folder, config)
        except Exception as exc:  # a broken real file must not stop training on the rest
            log.warning("skipping %s: %s", name, exc)
            continue
        if isinstance(sample, list):
            maps.extend(sample)
        elif sample is not None:
            maps.append(sample)
    return maps


def _ct_lumbar(folder: Path, config: TaskConfig) -> LabelMap:
    """TotalSegmentator silver labels of the 3 mm CT (Wasserthal et al. 2023; Apache-2.0)."""
    ts = to_working_grid(read_labels(folder / "totalseg_total_fast.nii.gz"), config.spacing_mm, True)
    body = resample_like(read_labels(folder / "totalseg_vertebrae_body.nii.gz"), ts, is_label=True).array
    image = resample_like(read_volume(folder / "ct.nii.gz"), ts).array
    generation = ts.array.astype(np.int32).copy()
    generation[(generation == 0) & (body == 2)] = DISC_GEN_OFFSET
    generation[(generation == 0) & _body_mask(image)] = BODY_GEN
    bright = np.arange(25, 51)
    t = ts.array
    if config.task == "spine":
        target = np.zeros(t.shape, dtype=np.int16)
        target[(t >= 27) & (t <= 50)] = 1
        target[(t == 25) | (t == 26)] = 2
        target[(body == 2) & (target == 0)] = 3
        target[t == 79] = 4  # cord lies inside the canal; the rest of the canal is unlabelled
        return LabelMap(
            "ct_lumbar_3mm", generation, target, unknown=(4,), image=normalise_real(image), bright=bright,
            tissue_lut=TOTALSEG_TISSUES,
        )  # fmt: skip
    target = np.zeros(t.shape, dtype=np.int16)
    target[(t == 88) | (t == 89)] = 1  # iliopsoas ~ psoas at lumbar levels
    target[(t == 86) | (t == 87)] = config.n_classes  # autochthon = multifidus or erector spinae
    return LabelMap(
        "ct_lumbar_3mm", generation, target, unknown=(2,), extra_sets=((3, 4),), image=normalise_real(image),
        bright=bright, tissue_lut=TOTALSEG_TISSUES,
    )  # fmt: skip


#: Share of the real-CT pair's samples that show its real image (the rest synthesise from its label map).
CT_DICOM_IMAGE_FRACTION = 0.6


def _ct_dicom(folder: Path, config: TaskConfig) -> LabelMap:
    """Real CT DICOM series (T11-T12, 20 slices) with TotalSegmentator "total" labels: a real image/label pair.

    The image goes to the working grid exactly as at inference (``inference.to_network_grid``: LPS, anti-aliasing,
    3 mm); the labels are resampled onto that grid. Unlabelled body voxels are split into fat (< -30 HU, the upper
    end of the adipose band of Kvist et al. 1988) and soft tissue for synthesis. TotalSegmentator "total" has no
    disc and no canal class, so disc and canal are unknown (marginal loss); no sacrum or psoas is in view.
    """
    from spinekit.segment.inference import to_network_grid

    grid = to_network_grid(read_volume(folder / "dicom"), config.spacing_mm)
    t = resample_like(read_labels(folder / "totalseg_total.nii.gz"), grid, is_label=True).array.astype(np.int32)
    hu = grid.array
    body = ndimage.binary_fill_holes(ndimage.binary_opening(hu > -500, iterations=1))
    generation = t.copy()
    free = (generation == 0) & body
    generation[free & (hu < -30)] = FAT_GEN
    generation[free & (hu >= -30)] = SOFT_GEN
    bright = np.arange(25, 51)
    if config.task == "spine":
        target = np.zeros(t.shape, dtype=np.int16)
        target[(t >= 27) & (t <= 50)] = 1
        target[t == 79] = 4
        unknown: tuple[int, ...] = (3, 4)
        extra: tuple[tuple[int, ...], ...] = ()
    else:
        target = np.zeros(t.shape, dtype=np.int16)
        target[(t == 86) | (t == 87)] = config.n_classes  # autochthon = multifidus or erector spinae
        unknown, extra = (1, 2), ((3, 4),)
    return LabelMap(
        "ct_dicom_t11_t12", generation, target, unknown=unknown, extra_sets=extra, image=normalise_real(hu),
        bright=bright, tissue_lut=TOTALSEG_TISSUES, image_fraction=CT_DICOM_IMAGE_FRACTION,
    )  # fmt: skip


def _verse004(folder: Path, config: TaskConfig) -> LabelMap | None:
    """Expert vertebra mask of VerSe subject 004 (Sekuboyina et al. 2021; CC BY-SA 4.0), no image."""
    if config.task != "spine":
        return None
    mask = to_working_grid(read_labels(folder / "sub-verse004_seg-vert_msk.nii.gz"), config.spacing_mm, True)
    generation = mask.array.astype(np.int32)
    target = spine_targets(mask.array)
    # Soft tissue around the spine so synthetic images are not bone on a flat background.
    body = ndimage.binary_dilation(generation > 0, iterations=int(round(40 / config.spacing_mm)))
    generation = np.where((generation == 0) & body, BODY_GEN, generation)
    bright = np.arange(1, 29)
    return LabelMap(
        "verse004_labels", generation, target, unknown=(2, 3, 4), bright=bright, tissue_lut=OUR_SPINE_TISSUES
    )


def dixon_muscle_order(muscles: Volume) -> dict[int, int]:
    """Map the four MyoSegmenTUM labels to classes by position: the two medial ones are multifidus.

    The source JSON's names disagree with the anatomy (README of ../shared/data), so we decide by the distance of
    each label's centroid from the midline of all four (multifidus lies medial to erector spinae; Standring 2020).
    """
    centroids = {}
    for value in range(1, 5):
        idx = np.argwhere(muscles.array == value)
        if len(idx):
            centroids[value] = muscles.index_to_lps(idx[:, ::-1].mean(axis=0))
    if len(centroids) < 4:
        return {}
    mid_x = np.mean([c[0] for c in centroids.values()])
    by_distance = sorted(centroids, key=lambda v: abs(centroids[v][0] - mid_x))
    return {by_distance[0]: 3, by_distance[1]: 3, by_distance[2]: 4, by_distance[3]: 4}


def dixon_manual_labels(folder: Path) -> Volume:
    """The manual muscle labels on the water image's grid.

    The label file's header has origin (0, 0, 0) while the images are at their scanner position; array shape and
    spacing agree, so the labels are voxel-aligned and we give them the image geometry.
    """
    manual = read_labels(folder / "tum01_muscles_manual.nii.gz")
    water = read_volume(folder / "tum01_water.nii.gz")
    if manual.array.shape == water.array.shape and np.allclose(manual.spacing, water.spacing, atol=1e-3):
        return water.with_array(manual.array)
    return manual


def _dixon(folder: Path, config: TaskConfig) -> LabelMap | None:
    """Manual erector spinae/multifidus labels on Dixon MRI (Burian et al. 2019; Apache-2.0)."""
    if config.task != "muscles":
        return None
    water = read_volume(folder / "tum01_water.nii.gz")
    fat = read_volume(folder / "tum01_fat.nii.gz")
    manual = dixon_manual_labels(folder)
    grid = to_working_grid(manual, config.spacing_mm, True)
    labels = grid.array
    w = resample_like(water, grid).array
    f = resample_like(fat, grid).array
    generation = np.where(labels > 0, MUSCLE_GEN_OFFSET + labels, 0).astype(np.int32)
    body = _body_mask(w + f)
    fat_fraction = f / np.maximum(w + f, 1e-6)
    generation[(generation == 0) & body & (fat_fraction > 0.5)] = FAT_GEN
    generation[(generation == 0) & body] = BODY_GEN
    target = np.zeros(labels.shape, dtype=np.int16)
    for value, cls in dixon_muscle_order(grid).items():
        target[labels == value] = cls
    # The only real MRI with muscle labels: where its image may be shown, it is shown in half of its samples.
    return LabelMap(
        "mri_axial_dixon_L2L5", generation, target, unknown=(1, 2), image=normalise_real(w), image_fraction=0.5
    )


#: Halves of a real source for within-subject cross-validation (``axial_half``).
AXIAL_HALVES = ("inferior", "superior")


def axial_half(source: LabelMap, half: str) -> LabelMap:
    """Only the ``inferior`` or ``superior`` half of a source (array axis 0 of the LPS working grid runs from
    inferior to superior); the other half, image and labels, is never seen. With a single real subject this is the
    nearest thing to leave-one-out: train on one half, score the other (``benchmarks/bench_segment.py``).
    """
    if half not in AXIAL_HALVES:
        raise InputError(f"unknown half {half!r} of {source.name}; choose one of {AXIAL_HALVES}")
    middle = source.target.shape[0] // 2
    keep = slice(0, middle) if half == "inferior" else slice(middle, None)
    image = None if source.image is None else source.image[keep]
    return replace(source, generation=source.generation[keep], target=source.target[keep], image=image)


def inferior_half(volume: Volume, spacing_mm: float) -> np.ndarray:
    """Which voxels of ``volume`` lie in the half that ``axial_half(..., "inferior")`` keeps on the working grid at
    ``spacing_mm``, so a network trained on one half is scored on the other only."""
    grid = to_working_grid(volume, spacing_mm, True)
    cut_z = grid.index_to_lps(np.array([[0.0, 0.0, grid.array.shape[0] // 2 - 0.5]]))[0, 2]
    corners = volume.index_to_lps(np.vstack([np.zeros(3), np.eye(3)]))[:, 2]  # z of voxel 0 and one step along i, j, k
    k, j, i = np.indices(volume.array.shape, sparse=True)
    z = corners[0] + sum((corners[1 + a] - corners[0]) * index for a, index in enumerate((i, j, k)))
    return np.broadcast_to(z < cut_z, volume.array.shape)


def sample_patch(
    source: LabelMap,
    config: TaskConfig,
    rng: np.random.Generator,
    settings: SynthesisSettings,
    real_image_fraction: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, target) training patch: crop around foreground, deform, synthesise (or use the real image)."""
    patch = np.asarray(config.patch)
    margin = (patch * 0.25).astype(int)
    big = patch + 2 * margin
    fg = np.argwhere((source.target > 0) & (source.target < 255))
    if len(fg) and rng.random() < 0.85:
        centre = fg[rng.integers(len(fg))]
    else:
        centre = np.array([rng.integers(0, s) for s in source.target.shape])
    start = centre - big // 2
    crops = [_crop(a, start, big) for a in (source.generation, source.target)]
    fraction = source.image_fraction if source.image_fraction is not None else real_image_fraction
    use_real = source.image is not None and rng.random() < fraction
    image_crop = _crop(source.image, start, big, fill=0.0) if use_real else None
    generation, target = crops
    if rng.random() < 0.8:
        stacked = random_affine_labels(np.stack([generation, target]).astype(np.int32), rng, settings)
        generation, target = stacked[0], stacked[1]
    sl = tuple(slice(m, m + p) for m, p in zip(margin, patch, strict=True))
    generation, target = generation[sl], target[sl]
    if image_crop is not None:
        # Real images skip the (label-only) deformation; they were normalised once over the whole volume, as at
        # inference (a CT with the fixed HU window), so a patch is not re-normalised.
        image = image_crop[sl]
        _, target = crops[0][sl], crops[1][sl]
    else:
        image = synthesize_image(generation, rng, settings, bright_labels=source.bright, tissue_lut=source.tissue_lut)
    if rng.random() < 0.5:  # left-right flip: classes are side-agnostic
        image, target = image[:, :, ::-1].copy(), target[:, :, ::-1].copy()
    return image.astype(np.float32), target.astype(np.int64)


def _crop(array: np.ndarray, start: np.ndarray, size: np.ndarray, fill: float = 0) -> np.ndarray:
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, array.shape)
    if np.any(src_hi <= src_lo):
        return out
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi, strict=True))] = array[
        tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
    ]
    return out
