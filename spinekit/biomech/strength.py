"""Vertebral compressive strength: HU -> vBMD calibration, QCT regression, MRI reference values, lytic lesions.

Sources and their status (what could and could not be checked while writing this module):

- Phantomless calibration: a line through two internal reference tissues, paraspinal muscle and adipose tissue, whose
  K2HPO4-equivalent densities are fixed (Gudmundsdottir H, Jonsdottir B, Kristinsson S, et al. (1993) Calcif Tissue
  Int 52:68-73; Boden SD et al. (1989) J Comput Assist Tomogr 13:1054-1058). The equivalent values used here
  (muscle +40, fat -80 mg/cm³, i.e. nominal 50 / -100 HU at ~0.8 mg/cm³ per HU) are NOMINAL ASSUMPTIONS, not copied
  from those papers; pass a phantom calibration (slope, intercept) whenever one exists.
- Strength regression: strength grows linearly with the product of trabecular vBMD and body cross-sectional area.
  What was checked (stored abstracts and tables, 2025):
  * Brinckmann P, Biggemann M, Hilweg D (1989) Prediction of the compressive strength of human lumbar vertebrae.
    Spine 14:606-610, abstract: 98 thoracolumbar motion segments; "the compressive strength of thoracolumbar
    vertebrae can be predicted from the product of density and end-plate area, with an error of estimate of 1 kN".
  * Biggemann M, Hilweg D, Brinckmann P (1988) Prediction of the compressive strength of vertebral bodies of the
    lumbar spine by quantitative computed tomography, abstract: 36 vertebrae, "a linear relationship exists between
    the compressive strength and the product of bone density and endplate area", standard error < 0.95 kN.
  * Singer K, Edmondston S, Day R, Breidahl P, Price R (1995) Bone 17:167-174, abstract: 306 vertebral bodies
    T1-L5; QCT trabecular density alone r = 0.28 with strength, "improved when the trabecular density was multiplied
    by the midvertebral body cross-sectional area (r = 0.83)". This is our exact form (mid-height CSA), so the
    R² reported is 0.83² = 0.69.
  * Buckley JM, Loo K, Motherway J (2007) Bone 40:767-774, Table 3 (81 thoracic vertebrae): R² 0.17 (tBMD),
    0.42 ((EA)tBMD), 0.81 ((EA)min).
  None of these texts showed the COEFFICIENTS. The slope used (3.3 N per mg/cm³·cm², no intercept) is an
  UNVERIFIED ESTIMATE that approximates the magnitude of the Brinckmann 1989 / Singer 1995 cadaveric strengths
  (it gives ~6.9 kN for a healthy L3, vBMD 150 mg/cm³ and CSA 14 cm², and ~2.8 kN at vBMD 60); every strength
  row says so in its method column.
- MRI only: age/sex reference vBMD (linear decline, approximate population values, ASSUMPTION) and level/sex reference
  CSA through the same regression; flagged "not patient-specific".
- Lytic lesions: strength x (1 - k f), f the lytic volume fraction of the body, k = 0.87: the slope of the
  linear relation of Costa MC, Campello LBB, Ryan M, Rochester J, Viceconti M, Dall'Ara E (2020) Effect of size and
  location of simulated lytic lesions on the structural properties of human vertebral bodies, a micro-finite
  element study. Bone Rep 12:100257, abstract: "the size of lytic lesions was linearly related with the reduction
  in structural properties of the vertebral body (reduction of stiffness between 3% and 30% for lesion volume
  between 4% and 35%)"; location had no clear effect. k = (0.30 - 0.03) / (0.35 - 0.04). ASSUMPTIONS: strength
  falls like the stiffness they report, and the pairing 4 % -> 3 %, 35 % -> 30 % is read from that sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spinekit.errors import InputError

#: K2HPO4-equivalent density (mg/cm³) assigned to the internal reference tissues (nominal, see module docstring).
MUSCLE_EQUIVALENT_MG_CM3 = 40.0
FAT_EQUIVALENT_MG_CM3 = -80.0
#: Adipose tissue HU window used to find fat voxels (Yoshizumi T et al. 1999 Radiology 211:283-286: -190 to -30 HU).
FAT_HU_WINDOW = (-190.0, -30.0)


@dataclass(frozen=True)
class Calibration:
    """vBMD (mg/cm³ K2HPO4) = slope * HU + intercept."""

    slope: float
    intercept: float
    method: str

    def vbmd(self, hu: float) -> float:
        return self.slope * hu + self.intercept


def phantom_calibration(slope: float, intercept: float) -> Calibration:
    """A user's phantom calibration (from the phantom's own software)."""
    if not (np.isfinite(slope) and 0.2 <= slope <= 3.0):
        raise InputError(f"phantom slope {slope} mg/cm³ per HU is implausible (expected about 0.5-1.5)")
    return Calibration(float(slope), float(intercept), "phantom calibration (user supplied)")


def phantomless_calibration(muscle_hu: float, fat_hu: float) -> Calibration:
    """Two-point internal calibration from median muscle and fat HU (see module docstring for the status)."""
    if not (np.isfinite(muscle_hu) and np.isfinite(fat_hu)) or muscle_hu - fat_hu < 50:
        raise InputError(
            f"internal calibration needs muscle HU well above fat HU (got muscle {muscle_hu}, fat {fat_hu}); "
            "pass a phantom calibration instead"
        )
    slope = (MUSCLE_EQUIVALENT_MG_CM3 - FAT_EQUIVALENT_MG_CM3) / (muscle_hu - fat_hu)
    intercept = MUSCLE_EQUIVALENT_MG_CM3 - slope * muscle_hu
    return Calibration(slope, intercept, f"phantomless (muscle {muscle_hu:.0f} HU, fat {fat_hu:.0f} HU)")


@dataclass(frozen=True)
class StrengthRegression:
    """strength (N) = slope * vBMD (mg/cm³) * CSA (cm²) + intercept."""

    name: str
    slope: float
    intercept: float
    r2: float
    source: str


DEFAULT_REGRESSION = StrengthRegression(
    name="vBMD x mid-height CSA, UNVERIFIED coefficient 3.3 N/(mg/cm3 cm2)",
    slope=3.3,
    intercept=0.0,
    r2=0.69,
    source="form and R2 (r = 0.83): Singer 1995 Bone 17:167; Brinckmann 1989 Spine 14:606 (SEE 1 kN); "
    "slope is an unverified estimate of their magnitude (see spinekit.biomech.strength)",
)


def qct_strength(vbmd_mg_cm3: float, csa_mm2: float, regression: StrengthRegression = DEFAULT_REGRESSION) -> float:
    """Compressive strength (N) of a vertebral body; NaN when either input is missing."""
    if not (np.isfinite(vbmd_mg_cm3) and np.isfinite(csa_mm2)) or csa_mm2 <= 0:
        return math.nan
    return max(0.0, regression.slope * vbmd_mg_cm3 * csa_mm2 / 100.0 + regression.intercept)


#: Reference trabecular vBMD (mg/cm³) at age 30 and its loss per year: approximate population values (ASSUMPTION,
#: within the QCT ranges of Riggs BL et al. 2004 J Bone Miner Res 19:1945): men 180, -1.2/yr; women 185, -1.6/yr.
REFERENCE_VBMD = {"male": (180.0, 1.2), "female": (185.0, 1.6)}
#: Reference mid-body CSA (mm²) by level, men; women x 0.8 (ASSUMPTION, lumbar endplate areas ~ 13-18 cm²).
REFERENCE_CSA_MM2 = {"T12": 1250.0, "L1": 1350.0, "L2": 1450.0, "L3": 1550.0, "L4": 1600.0, "L5": 1650.0}
FEMALE_CSA_FACTOR = 0.8


def reference_strength(level: str, sex: str, age: float, regression: StrengthRegression = DEFAULT_REGRESSION) -> float:
    """Age-, sex- and level-specific reference strength (N) for MRI-only studies: NOT patient-specific."""
    base, loss = REFERENCE_VBMD[sex]
    vbmd = max(40.0, base - loss * max(0.0, age - 30.0))
    csa = REFERENCE_CSA_MM2.get(level, REFERENCE_CSA_MM2["L3"]) * (FEMALE_CSA_FACTOR if sex == "female" else 1.0)
    return qct_strength(vbmd, csa, regression)


#: Strength lost per unit lytic volume fraction: (0.30 - 0.03) / (0.35 - 0.04), Costa et al. 2020 (module docstring).
LYTIC_SLOPE = (0.30 - 0.03) / (0.35 - 0.04)
LYTIC_RULE = "strength x (1 - 0.87 x lytic fraction), Costa 2020 Bone Rep 12:100257 (stiffness, microFE)"


def lesion_adjusted(strength_n: float, lesion_fraction: float) -> float:
    """Strength reduced linearly with the lytic lesion volume fraction (Costa 2020 slope, see module docstring)."""
    if not np.isfinite(lesion_fraction) or lesion_fraction <= 0:
        return strength_n
    return strength_n * max(0.0, 1.0 - LYTIC_SLOPE * min(1.0, lesion_fraction))
