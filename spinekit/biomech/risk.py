"""Factor of risk = load / strength per vertebra and task (Hayes 1991; Bouxsein 2006), with the ±20 % zone.

The load on a vertebra is the larger compression of its two adjacent intervertebral joints (conservative: the
vertebral body fails at the more loaded endplate). Classes: "low" below 1 - 20 %, "transition" within ±20 % of 1.0,
"high" above 1 + 20 %.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from spinekit.biomech import constants as C

#: Joint levels adjacent to each vertebra.
ADJACENT = {
    "T12": ("T12/L1",),
    "L1": ("T12/L1", "L1/L2"),
    "L2": ("L1/L2", "L2/L3"),
    "L3": ("L2/L3", "L3/L4"),
    "L4": ("L3/L4", "L4/L5"),
    "L5": ("L4/L5", "L5/S1"),
}


def classify(ratio: float) -> str:
    """ "low", "transition" or "high" around :data:`constants.RISK_THRESHOLD`; "" for NaN."""
    if not np.isfinite(ratio):
        return ""
    low = C.RISK_THRESHOLD * (1 - C.RISK_TRANSITION)
    high = C.RISK_THRESHOLD * (1 + C.RISK_TRANSITION)
    return "low" if ratio < low else "high" if ratio > high else "transition"


def vertebral_load(levels: pd.DataFrame, vertebra: str) -> float:
    """Compressive load (N) on ``vertebra`` from a per-joint table (level, compression_N)."""
    values = levels.set_index("level")["compression_N"]
    loads = [float(values[j]) for j in ADJACENT.get(vertebra, ()) if j in values.index]
    return max(loads) if loads else math.nan


def factor_of_risk(load_n: float, strength_n: float) -> float:
    if not (np.isfinite(load_n) and np.isfinite(strength_n)) or strength_n <= 0:
        return math.nan
    return load_n / strength_n
