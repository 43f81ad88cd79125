"""SynthSeg-style image synthesis from label maps: random contrast, resolution, thickness, bias, noise, gamma.

Generative model of Billot et al. 2023 (SynthSeg, Med Image Anal 86:102789, section 3.2): a label map is deformed,
each generation label gets an intensity drawn from a Gaussian whose mean and spread are themselves random, the image
is blurred to a random slice thickness and resampled to a random acquisition resolution, multiplied by a smooth bias
field, corrupted with noise and gamma-transformed, then min-max normalised. Ranges follow SynthSeg's Table 1 scaled to
our 3 mm working grid. MONAI transforms do the bias field, noise, contrast and smoothing (``RandBiasField``,
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


def _label_intensities(
    labels: np.ndarray, rng: np.random.Generator, settings: SynthesisSettings, bright_labels: np.ndarray | None
) -> np.ndarray:
    """Per-label Gaussian intensities (Billot et al. 2023, eq. 2), optionally with a CT-like bone prior."""
    values = np.unique(labels)
    lut_size = int(values.max()) + 1
    means = rng.uniform(*settings.mean_range, lut_size)
    stds = rng.uniform(*settings.std_range, lut_size)
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
) -> np.ndarray:
    """A random-contrast image from a generation label map (non-negative ints), normalised to [0, 1].

    Args:
        labels: generation labels (any integer labels, more than the segmentation targets is better: organs, fat).
        rng: random generator (the only source of randomness, so runs are reproducible by seed).
        settings: generative model ranges.
        bright_labels: generation labels that are bone, for the CT-like share of samples.
    """
    from monai.transforms import RandAdjustContrast, RandBiasField, RandGaussianNoise

    settings = settings or SynthesisSettings()
    shape = labels.shape
    image = _label_intensities(labels.astype(np.int64), rng, settings, bright_labels)
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


def normalise_real(image: np.ndarray) -> np.ndarray:
    """Percentile normalisation to [0, 1] used for every real image at inference and when mixed into training."""
    return _normalise(np.asarray(image, dtype=np.float32))
