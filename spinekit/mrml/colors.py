"""Colour-by-value helpers for the fracture-risk overlay.

The factor of risk is applied load divided by failure load (Hayes et al. 1991, Crit Rev Biomed Eng 19:
"factor of risk", phi); phi > 1 predicts failure (Melton et al. 1989, Calcif Tissue Int 45). The bands
below put an uncertainty margin of +/-20 % around phi = 1, which is about the error of QCT-based
vertebral strength estimates (Crawford et al. 2003, Bone 33: r^2 = 0.86 against cadaver failure loads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import slicer

from spinekit.errors import LabelError

#: (upper bound of the band, name, RGB 0-1), lowest band first.
RISK_BANDS: tuple[tuple[float, str, tuple[float, float, float]], ...] = (
    (0.8, "low", (0.20, 0.70, 0.25)),
    (1.2, "borderline", (1.00, 0.70, 0.00)),
    (math.inf, "high", (0.85, 0.10, 0.10)),
)
#: Colour of a vertebra whose ratio could not be computed (NaN).
NO_VALUE_COLOR = (0.6, 0.6, 0.6)


def risk_band(ratio: float) -> str:
    """Band name: "low" (< 0.8), "borderline" (0.8-1.2), "high" (> 1.2), "unknown" for NaN."""
    if ratio is None or not math.isfinite(ratio):
        return "unknown"
    return next(name for bound, name, _ in RISK_BANDS if ratio < bound or bound == math.inf)


def risk_color(ratio: float) -> tuple[float, float, float]:
    """Green below 0.8, amber from 0.8 to 1.2, red above 1.2, grey for NaN (RGB 0-1)."""
    if ratio is None or not math.isfinite(ratio):
        return NO_VALUE_COLOR
    for bound, _, color in RISK_BANDS:
        if ratio < bound:
            return color
    return RISK_BANDS[-1][2]


def risk_legend() -> str:
    """One-line legend for the overlay (plain text; the GUI may render it in colour)."""
    return "green: load/strength < 0.8   amber: 0.8-1.2   red: > 1.2   grey: not computed"


def _as_unit_rgb(color: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(c) for c in color)
    if len(values) != 3:
        raise ValueError(f"a colour needs 3 components (RGB), got {color!r}")
    if any(c > 1.0 for c in values):  # 0-255 integers
        values = tuple(c / 255.0 for c in values)
    return values


def set_segment_colors(node: slicer.vtkMRMLSegmentationNode, colors: Mapping[str, Sequence[float]]) -> None:
    """Set the colour of each named segment (RGB 0-1, or 0-255 integers); other segments keep theirs.

    Raises:
        LabelError: a segment ID is not in the segmentation.
    """
    segmentation = node.GetSegmentation()
    missing = [segment_id for segment_id in colors if segmentation.GetSegment(segment_id) is None]
    if missing:
        raise LabelError(f"segmentation {node.GetName()!r} has no segments {missing}")
    with slicer.util.NodeModify(node):
        for segment_id, color in colors.items():
            segmentation.GetSegment(segment_id).SetColor(*_as_unit_rgb(color))
