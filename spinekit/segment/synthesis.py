"""SynthSeg-style image synthesis from label maps: random contrast, resolution, thickness, bias, noise, gamma.

Generative model of Billot et al. 2023 (SynthSeg, Med Image Anal 86:102789, section 3.2): a label map is deformed,
each generation label gets an intensity drawn from a Gaussian whose mean and spread are themselves random, the image
is blurred to a random slice thickness and resampled to a random acquisition resolution, multiplied by a smooth bias
field, corrupted with noise and gamma-transformed, then min-max normalised. Ranges follow SynthSeg's Table 1 scaled to
our 3 mm working grid.

CT branch (``ct_hu_fraction`` of the samples whose source knows its tissues): every generation label gets a tissue
class and its intensity is drawn from that tissue's real Hounsfield range (``HU_RANGES``): bone as a cortical shell
around trabecular core, bowel as wall with gas pockets, unlabelled body as a fat/soft-tissue mixture; then partial
volume, CT noise in HU and the same fixed HU window (:func:`ct_window`) that every real CT gets at inference, so
train and test intensities agree (percentile normalisation of a CT depends on how much air and metal is in view).

MONAI transforms do the bias field, noise, contrast and smoothing (``RandBiasField``,
``RandGaussianNoise``, ``RandAdjustContrast``, ``gaussian_filter`` via ``GaussianSmooth``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SynthesisSettings:
    """Ranges of the random generative model (Billot et al. 2023, Table 1, adapted to a 3 mm grid).

    Attributes:
        mean_range: per-label mean intensity, uniform in this range (arbitrary units, image later normalised).
        std_range: per-label intensity standard deviation.
        rotation_deg: maximum rotation about each axis.
        scale_range: isotropic scaling factor range.
        max_thickness_vox: maximum simulated slice thickness (voxels of the working grid) along one random axis.
        bias_coeff: coefficient range of MONAI's Legendre bias field.
        noise_std: maximum Gaussian noise standard deviation after normalisation.
        gamma_range: gamma exponent range (``RandAdjustContrast``).
        ct_like_fraction: fraction of samples whose bone labels are bright and fat dark, as in CT; the rest is fully
            random contrast (any MRI weighting).
        ct_hu_fraction: fraction of samples (of sources with a tissue table) drawn in real Hounsfield units and
            normalised with :func:`ct_window` (see the module docstring); applied before ``ct_like_fraction``.
        tissue_class_fraction: fraction of the random-contrast samples (of sources with a tissue table) in which
            generation labels of one tissue share one intensity mean, jittered by ``tissue_class_jitter`` per
            label: SynthSeg's generation classes (Billot et al. 2023, section 3.2). Labels that touch without an
            intensity step (multifidus against erector spinae, one vertebra against the next) then have to be told
            apart by shape and position, as in real MRI.
        tissue_class_jitter: standard deviation of the per-label offset from the shared tissue mean.
    """

    mean_range: tuple[float, float] = (0.0, 1.0)
    std_range: tuple[float, float] = (0.0, 0.08)
    rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    max_thickness_vox: float = 2.5
    bias_coeff: tuple[float, float] = (0.0, 0.4)
    noise_std: float = 0.05
    gamma_range: tuple[float, float] = (0.6, 1.6)
    ct_like_fraction: float = 0.3
    ct_hu_fraction: float = 0.5
    tissue_class_fraction: float = 0.5
    tissue_class_jitter: float = 0.03


def random_affine_labels(labels: np.ndarray, rng: np.random.Generator, settings: SynthesisSettings) -> np.ndarray:
    """Rotate/scale label maps about their centre (nearest neighbour); a 4D input is a stack deformed alike."""
    angles = np.deg2rad(rng.uniform(-settings.rotation_deg, settings.rotation_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = rng.uniform(*settings.scale_range)
    matrix = (rx @ ry @ rz) / scale
    stack = labels if labels.ndim == 4 else labels[None]
    centre = (np.asarray(stack.shape[1:]) - 1) / 2.0
    offset = centre - matrix @ centre
    out = np.stack(
        [ndimage.affine_transform(a, matrix, offset=offset, order=0, mode="constant", cval=0) for a in stack]
    )
    return out if labels.ndim == 4 else out[0]


def _shared_tissue_means(
    means: np.ndarray, tissue_lut: np.ndarray, rng: np.random.Generator, settings: SynthesisSettings
) -> np.ndarray:
    """``means`` with every known tissue's labels drawn around one shared mean (SynthSeg's generation classes)."""
    tissues = np.full(means.size, -1, dtype=np.int64)
    n = min(means.size, tissue_lut.size)
    tissues[:n] = tissue_lut[:n]
    out = means.copy()
    for tissue in np.unique(tissues[tissues >= 0]):
        members = np.flatnonzero(tissues == tissue)
        shared = rng.uniform(*settings.mean_range)
        out[members] = shared + rng.normal(0.0, settings.tissue_class_jitter, members.size)
    return out


def _label_intensities(
    labels: np.ndarray,
    rng: np.random.Generator,
    settings: SynthesisSettings,
    bright_labels: np.ndarray | None,
    tissue_lut: np.ndarray | None = None,
) -> np.ndarray:
    """Per-label Gaussian intensities (Billot et al. 2023, eq. 2), optionally with a CT-like bone prior."""
    values = np.unique(labels)
    lut_size = int(values.max()) + 1
    means = rng.uniform(*settings.mean_range, lut_size)
    stds = rng.uniform(*settings.std_range, lut_size)
    if tissue_lut is not None and settings.tissue_class_fraction > 0 and rng.random() < settings.tissue_class_fraction:
        means = _shared_tissue_means(means, tissue_lut, rng, settings)
    if bright_labels is not None and bright_labels.size and rng.random() < settings.ct_like_fraction:
        # CT-like: bone bright, soft tissue mid grey, air/background dark.
        means = rng.uniform(0.3, 0.5, lut_size)
        bright = bright_labels[bright_labels < lut_size]
        means[bright] = rng.uniform(0.75, 1.0, bright.size)
        means[0] = rng.uniform(0.0, 0.1)
    image = means[labels] + stds[labels] * rng.standard_normal(labels.shape)
    return image.astype(np.float32)


def _thickness_and_resolution(image: np.ndarray, rng: np.random.Generator, settings: SynthesisSettings) -> np.ndarray:
    """Blur along a random axis to a random slice thickness, then resample down and up (partial volume)."""
    axis = int(rng.integers(0, 3))
    thickness = rng.uniform(1.0, settings.max_thickness_vox)
    sigma = [0.3, 0.3, 0.3]
    sigma[axis] = thickness / 2.355  # FWHM -> sigma (Billot et al. 2023, eq. 5)
    image = ndimage.gaussian_filter(image, sigma)
    if thickness > 1.5:
        zoom = [1.0, 1.0, 1.0]
        zoom[axis] = 1.0 / thickness
        low = ndimage.zoom(image, zoom, order=1)
        back = [s / t for s, t in zip(image.shape, low.shape, strict=True)]
        image = ndimage.zoom(low, back, order=1)
    return image


def synthesize_image(
    labels: np.ndarray,
    rng: np.random.Generator,
    settings: SynthesisSettings | None = None,
    bright_labels: np.ndarray | None = None,
    tissue_lut: np.ndarray | None = None,
) -> np.ndarray:
    """A random-contrast image from a generation label map (non-negative ints), normalised to [0, 1].

    Args:
        labels: generation labels (any integer labels, more than the segmentation targets is better: organs, fat).
        rng: random generator (the only source of randomness, so runs are reproducible by seed).
        settings: generative model ranges.
        bright_labels: generation labels that are bone, for the CT-like share of samples.
        tissue_lut: tissue class (index into ``TISSUES``, -1 unknown) of every generation label; enables the
            Hounsfield-unit CT branch (:func:`synthesize_ct`).
    """
    from monai.transforms import RandAdjustContrast, RandBiasField, RandGaussianNoise

    settings = settings or SynthesisSettings()
    if tissue_lut is not None and rng.random() < settings.ct_hu_fraction:
        return synthesize_ct(labels, tissue_lut, rng, settings)
    shape = labels.shape
    image = _label_intensities(labels.astype(np.int64), rng, settings, bright_labels, tissue_lut)
    image = _thickness_and_resolution(image, rng, settings)
    if image.shape != shape:
        image = ndimage.zoom(image, [s / t for s, t in zip(shape, image.shape, strict=True)], order=1)
    seed = int(rng.integers(0, 2**31 - 1))
    bias = RandBiasField(coeff_range=settings.bias_coeff, prob=1.0)
    bias.set_random_state(seed)
    image = np.asarray(bias(image[None]))[0]
    image = _normalise(image)
    noise = RandGaussianNoise(prob=1.0, std=settings.noise_std)
    noise.set_random_state(seed + 1)
    image = np.asarray(noise(image[None]))[0]
    gamma = RandAdjustContrast(prob=1.0, gamma=settings.gamma_range)
    gamma.set_random_state(seed + 2)
    image = np.asarray(gamma(np.clip(image, 0, None)[None]))[0]
    return _normalise(image).astype(np.float32)


def _normalise(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [0.5, 99.5])
    if high - low < 1e-6:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def looks_like_hu(image: np.ndarray) -> bool:
    """True when intensities look like CT Hounsfield units: air (1st percentile) below -500 HU."""
    sample = np.asarray(image)[::2, ::2, ::2] if np.ndim(image) == 3 else np.asarray(image)
    return bool(sample.size) and float(np.percentile(sample, 1)) < CT_AIR_BELOW_HU


def ct_window(image: np.ndarray) -> np.ndarray:
    """Fixed piecewise-linear Hounsfield window to [0, 1] (``CT_WINDOW_HU`` -> ``CT_WINDOW_OUT``), same for every CT."""
    return np.interp(np.asarray(image, dtype=np.float32), CT_WINDOW_HU, CT_WINDOW_OUT).astype(np.float32)


def normalise_real(image: np.ndarray) -> np.ndarray:
    """Normalisation to [0, 1] of every real image, at inference and when mixed into training.

    CT (intensities in HU, see :func:`looks_like_hu`) gets the fixed window :func:`ct_window`, exactly as the
    Hounsfield-unit synthesis branch does; anything else (MRI) gets percentile normalisation.
    """
    array = np.asarray(image, dtype=np.float32)
    return ct_window(array) if looks_like_hu(array) else _normalise(array)


def synthesize_ct(
    labels: np.ndarray, tissue_lut: np.ndarray, rng: np.random.Generator, settings: SynthesisSettings
) -> np.ndarray:
    """A CT-like image in Hounsfield units from generation labels and their tissue classes, windowed to [0, 1].

    Per label, a mean drawn from its tissue's ``HU_RANGES`` and a texture spread of 3-25 HU; bone is a cortical
    shell (one working voxel, partial-volume diluted) around trabecular core; bowel gets gas pockets and unlabelled
    body a fat/soft mixture from thresholded smooth noise; then slice thickness and resolution (as the MR branch),
    a scanner calibration offset of +-20 HU and quantum noise of 5-40 HU (typical abdominal CT, Goo 2012,
    Korean J Radiol 13:1), and :func:`ct_window`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    size = int(labels.max()) + 1
    lut = np.full(max(size, len(tissue_lut)), TISSUES.index("soft"), dtype=np.int64)
    lut[: len(tissue_lut)] = np.where(np.asarray(tissue_lut) < 0, TISSUES.index("soft"), tissue_lut)
    ranges = np.array([HU_RANGES[t] for t in TISSUES], dtype=np.float64)
    label_tissue = lut[:size]
    means = rng.uniform(ranges[label_tissue, 0], ranges[label_tissue, 1])
    stds = rng.uniform(3.0, 25.0, size)
    image = means[labels] + stds[labels] * rng.standard_normal(labels.shape)
    tissue = label_tissue[labels]

    def draw(name: str, count: int | tuple) -> np.ndarray:
        low, high = HU_RANGES[name]
        return rng.uniform(low, high) + rng.uniform(3.0, 25.0) * rng.standard_normal(count)

    bone = tissue == TISSUES.index("bone")
    if bone.any():
        core = ndimage.binary_erosion(bone)
        shell = bone & ~core
        dilution = rng.uniform(0.3, 0.8)  # a ~1 mm cortex in a 3 mm voxel (Silva et al. 1994, Spine 19:2077)
        image[core] = draw("trabecular", int(core.sum()))
        trab = float(np.mean(HU_RANGES["trabecular"]))
        image[shell] = trab + dilution * (draw("cortical", int(shell.sum())) - trab)
    for name, other, share in (("body", "fat", (0.3, 0.8)), ("bowel", "gas", (0.0, 0.6))):
        mask = tissue == TISSUES.index(name)
        if not mask.any():
            continue
        field = ndimage.gaussian_filter(rng.standard_normal(labels.shape), rng.uniform(1.5, 4.0))
        cut = np.quantile(field[mask], 1.0 - rng.uniform(*share))
        pocket = mask & (field > cut)
        base = "soft" if name == "body" else "organ"
        image[mask] = draw(base, int(mask.sum()))
        image[pocket] = draw(other, int(pocket.sum()))
    image = _thickness_and_resolution(image.astype(np.float32), rng, settings)
    if image.shape != labels.shape:
        image = ndimage.zoom(image, [s / t for s, t in zip(labels.shape, image.shape, strict=True)], order=1)
    image = image * rng.uniform(0.97, 1.03) + rng.uniform(-20.0, 20.0)
    image = image + rng.uniform(5.0, 40.0) * rng.standard_normal(image.shape)
    return ct_window(image)


#: Tissue classes of the CT branch; "body" = fat/soft mixture, "bowel" = wall with gas, "bone" = shell + core.
TISSUES = (
    "air", "lung", "gas", "fat", "fluid", "soft", "muscle", "organ", "vessel", "disc", "cartilage", "cord",
    "trabecular", "cortical", "body", "bowel", "bone",
)  # fmt: skip
#: Hounsfield ranges (mean of a tissue in one scan is drawn uniformly inside): air -1000 by definition; lung
#: parenchyma -950..-700; bowel gas -1000..-600; fat -130..-70 (inside the -190..-30
#: adipose band of Kvist et al. 1988, Am J Clin Nutr 48:1351); CSF
#: 0-20; muscle 30-70 (Aubrey et al. 2014, Acta Physiol 210:489); solid organs 20-130 and vessels 30-350 to cover
#: unenhanced to portal-venous/arterial phases; disc 50-110; costal cartilage 60-250 (partly calcified); cord 20-45;
#: trabecular bone 100-350 and cortical 500-1500 (Schreiber et al. 2011, J Bone Joint Surg Am 93:1057).
HU_RANGES = {
    "air": (-1000.0, -980.0), "lung": (-950.0, -700.0), "gas": (-1000.0, -600.0), "fat": (-130.0, -70.0),
    "fluid": (0.0, 20.0), "soft": (20.0, 60.0), "muscle": (30.0, 70.0), "organ": (20.0, 130.0),
    "vessel": (30.0, 350.0), "disc": (50.0, 110.0), "cartilage": (60.0, 250.0), "cord": (20.0, 45.0),
    "trabecular": (100.0, 350.0), "cortical": (500.0, 1500.0), "body": (20.0, 60.0), "bowel": (20.0, 80.0),
    "bone": (100.0, 350.0),
}  # fmt: skip
#: CT air is about -1000 HU; an image whose 1st percentile lies below this is treated as CT (as ``api.guess_modality``).
CT_AIR_BELOW_HU = -500.0
#: Window knots: -1000 HU (air) -> 0, -200 HU -> 0.1, 400 HU -> 0.7, 1500 HU -> 1. The abdominal soft-tissue window
#: (W400/L40, -160..240 HU) and trabecular bone get 60 % of the output range; cortical bone and air stay distinct.
CT_WINDOW_HU = (-1000.0, -200.0, 400.0, 1500.0)
CT_WINDOW_OUT = (0.0, 0.1, 0.7, 1.0)
