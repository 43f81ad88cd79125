"""Tissue intensities (CT Hounsfield units, T1/T2-like MRI), partial-volume blur, bias field and noise.

CT values: air -1000 HU and water 0 HU by definition; fat -100 HU (adipose tissue is usually segmented at
-190..-30 HU), skeletal muscle 50 HU (normal-density muscle 30-150 HU, Aubrey et al. 2014, Acta Physiol
210:489), soft tissue 40 HU, CSF 8 HU, disc ~80 HU (annulus 90, nucleus 70), cortical bone 1200 HU,
posterior elements 500 HU (cortex and cancellous bone mixed at this resolution). These are typical values,
chosen for contrast, not a scanner model.
Trabecular HU follows the QCT linear calibration ``BMD = BMD_PER_HU * HU + BMD_INTERCEPT``
(K2HPO4-equivalent mg/cm^3; a slope of ~0.8 mg/cm^3 per HU at 120 kVp with near-zero intercept is typical
of phantom-calibrated clinical scanners, cf. Cann & Genant 1980, J Comput Assist Tomogr 4:493, and the
asynchronous calibrations reviewed by Brown et al. 2017, J Clin Densitom 20:216). Use
:func:`bmd_from_hu` to read BMD back with the same calibration.

MRI values (0-1000 scale) are qualitative: T1 fat bright, marrow fairly bright, disc and muscle grey, CSF dark;
T2 CSF and nucleus bright, fat bright-ish, muscle dark. Muscles mix muscle and fat signal by their fat
fraction (the two-compartment model behind proton-density fat fraction, Reeder et al. 2012, J Magn Reson Imaging
36:1011). Noise on magnitude MRI is Rician (Gudbjartsson & Patz 1995, Magn Reson Med 34:910).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spinekit.phantom.shapes import (
    AIR,
    ANNULUS,
    BLASTIC,
    CORTICAL,
    CSF,
    FAT,
    LYTIC,
    MUSCLE_BASE,
    NUCLEUS,
    POSTERIOR,
    SOFT,
    TRABECULAR,
)

BMD_PER_HU = 0.8
BMD_INTERCEPT = 0.0
MUSCLE_KEY = "muscle"
_CT = {
    AIR: -1000.0,
    FAT: -100.0,
    SOFT: 40.0,
    CSF: 8.0,
    ANNULUS: 90.0,
    NUCLEUS: 70.0,
    CORTICAL: 1200.0,
    POSTERIOR: 500.0,
    LYTIC: 25.0,
    BLASTIC: 900.0,
    MUSCLE_KEY: 50.0,
}
_T1 = {
    AIR: 0.0,
    FAT: 900.0,
    SOFT: 420.0,
    CSF: 150.0,
    ANNULUS: 300.0,
    NUCLEUS: 330.0,
    CORTICAL: 40.0,
    POSTERIOR: 420.0,
    TRABECULAR: 600.0,
    LYTIC: 250.0,
    BLASTIC: 60.0,
    MUSCLE_KEY: 350.0,
}
_T2 = {
    AIR: 0.0,
    FAT: 700.0,
    SOFT: 380.0,
    CSF: 1000.0,
    ANNULUS: 250.0,
    NUCLEUS: 850.0,
    CORTICAL: 30.0,
    POSTERIOR: 300.0,
    TRABECULAR: 450.0,
    LYTIC: 750.0,
    BLASTIC: 50.0,
    MUSCLE_KEY: 250.0,
}
#: Amplitude of the smooth multiplicative MRI bias field (+-15 %), the order of 1.5 T body-coil inhomogeneity.
BIAS_AMPLITUDE = 0.15


def hu_from_bmd(bmd_mg_cm3: float) -> float:
    """Trabecular CT number (HU) of a vBMD (mg/cm^3) under the phantom's QCT calibration."""
    return (bmd_mg_cm3 - BMD_INTERCEPT) / BMD_PER_HU


def bmd_from_hu(hu: float | np.ndarray) -> float | np.ndarray:
    """vBMD (mg/cm^3) of a trabecular CT number under the phantom's QCT calibration."""
    return BMD_PER_HU * np.asarray(hu) + BMD_INTERCEPT


def lookup_table(modality: str, bmd_mg_cm3: float, fat_fractions: dict[int, float]) -> np.ndarray:
    """Intensity of every tissue code (index = code); muscle codes mix muscle and fat by fat fraction."""
    values = {"ct": _CT, "t1": _T1, "t2": _T2}[modality]
    lut = np.zeros(MUSCLE_BASE + 32, dtype=np.float32)
    for code, value in values.items():
        if code != MUSCLE_KEY:
            lut[code] = value
    if modality == "ct":
        lut[TRABECULAR] = hu_from_bmd(bmd_mg_cm3)
    for label, ff in fat_fractions.items():
        lut[MUSCLE_BASE + label] = (1 - ff) * values[MUSCLE_KEY] + ff * values[FAT]
    return lut


def synthesize(
    tissue: np.ndarray,
    lut: np.ndarray,
    spacing: tuple[float, float, float],
    modality: str,
    blur_mm: float,
    noise_sd: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Tissue map -> image: lookup, Gaussian partial-volume blur (sigma in mm), bias field (MRI), then noise."""
    image = lut[tissue]
    if blur_mm > 0:
        sigma = [blur_mm / s for s in spacing[::-1]]  # array axes are k, j, i
        image = ndimage.gaussian_filter(image, sigma, mode="nearest", truncate=3.0)
    if modality != "ct":
        image *= _bias_field(image.shape, rng)
    if noise_sd > 0:
        if modality == "ct":
            image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sd)
        else:  # magnitude of a complex signal with Gaussian noise in both channels: Rician (Gudbjartsson 1995)
            real = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sd)
            imag = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sd)
            image = np.sqrt(real * real + imag * imag)
    return image


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field: a random linear + quadratic polynomial over the field of view."""
    coeffs = rng.uniform(-1, 1, size=6)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    k, j, i = axes
    field = (
        coeffs[0] * k[:, None, None]
        + coeffs[1] * j[None, :, None]
        + coeffs[2] * i[None, None, :]
        + coeffs[3] * k[:, None, None] ** 2
        + coeffs[4] * j[None, :, None] ** 2
        + coeffs[5] * i[None, None, :] ** 2
    )
    field /= max(float(np.abs(field).max()), 1e-6)
    return (1 + BIAS_AMPLITUDE * field).astype(np.float32)
