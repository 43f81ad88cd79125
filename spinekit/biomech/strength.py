"""Vertebral compressive strength: HU -> vBMD calibration, QCT regression, MRI reference values, lytic lesions.

Sources and their status (what could and could not be checked while writing this module):

- Phantomless calibration: a line through two internal reference tissues, paraspinal muscle and adipose tissue, whose
  K2HPO4-equivalent densities are fixed (Gudmundsdottir H, Jonsdottir B, Kristinsson S, et al. (1993) Calcif Tissue
  Int 52:68-73; Boden SD et al. (1989) J Comput Assist Tomogr 13:1054-1058). The equivalent values used here
  (muscle +40, fat -80 mg/cm³, i.e. nominal 50 / -100 HU at ~0.8 mg/cm³ per HU) are NOMINAL ASSUMPTIONS, not copied
  from those papers; pass a phantom calibration (slope, intercept) whenever one exists.
- Strength regression: strength grows with the product of trabecular vBMD and body cross-sectional area (the
  "axial rigidity" form, Bouxsein ML et al. 2006 J Bone Miner Res 21:1475-1482; Buckley JM et al. 2007 Bone
  40:767-774). The coefficients below (3.3 N per mg/cm³·cm², no intercept) could NOT be verified against a published
  table here: they give 5-7 kN for a healthy L3 (vBMD 150, CSA 14 cm²) and ~2.8 kN for an osteoporotic one
  (vBMD 60), the ranges of cadaveric tests. The R² reported is Buckley 2007 Table 3 for trabecular-BMD axial rigidity
  ((EA)tBMD, R² = 0.42, thoracic vertebrae), the closest verified figure.
- MRI only: age/sex reference vBMD (linear decline, approximate population values, ASSUMPTION) and level/sex reference
  CSA through the same regression; flagged "not patient-specific".
- Lytic lesions: strength x (1 - lesion volume fraction), the proportional rule after Silva MJ, Hipp JA, McGowan DP,
  Takeuchi T, Hayes WC (1993) Spine 18:2084-2090 (strength of vertebrae with simulated lytic defects falls with
  defect size); a first-order rule, not their regression.
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
    name="vBMD x CSA (axial-rigidity form)",
    slope=3.3,
    intercept=0.0,
    r2=0.42,
    source="form: Bouxsein 2006, Buckley 2007; coefficients unverified (see spinekit.biomech.strength); "
    "R2 = Buckley 2007 Table 3 (EA)tBMD",
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


def lesion_adjusted(strength_n: float, lesion_fraction: float) -> float:
    """Strength reduced in proportion to the lytic lesion volume fraction (Silva 1993 first-order rule)."""
    if not np.isfinite(lesion_fraction) or lesion_fraction <= 0:
        return strength_n
    return strength_n * max(0.0, 1.0 - min(1.0, lesion_fraction))
