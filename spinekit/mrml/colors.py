"""Colour-by-value helpers for the fracture-risk overlay.

The factor of risk is applied load divided by failure load (concept: Hayes WC, Piazza SJ, Zysset PK 1991,
Radiol Clin North Am 29:1-18; used per vertebra with QCT strength by Bouxsein ML et al. 2006, J Bone Miner Res
21:1475-1482). The threshold 1.0 and the +/-20 % transition band around it are the project's choice, defined once
in :mod:`spinekit.biomech.constants` (``RISK_THRESHOLD``, ``RISK_TRANSITION``, where the band's source is cited);
the bands here are :func:`spinekit.biomech.risk.classify`, so the overlay and ``risk.csv``'s ``class`` column agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import slicer

from spinekit.biomech import constants as biomech_constants
from spinekit.biomech.risk import classify
from spinekit.errors import LabelError

#: (class name as in risk.csv, RGB 0-1), lowest risk first: green, amber, red.
RISK_BANDS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("low", (0.20, 0.70, 0.25)),
    ("transition", (1.00, 0.70, 0.00)),
    ("high", (0.85, 0.10, 0.10)),
)
#: Colour of a vertebra whose ratio could not be computed (NaN).
NO_VALUE_COLOR = (0.6, 0.6, 0.6)


def risk_band(ratio: float | None) -> str:
    """ "low", "transition" or "high" (as :func:`spinekit.biomech.risk.classify`), "unknown" for NaN/None."""
    if ratio is None or not math.isfinite(ratio):
        return "unknown"
    return classify(float(ratio))


def risk_color(ratio: float | None) -> tuple[float, float, float]:
    """Green (low), amber (within the transition band), red (high), grey for NaN (RGB 0-1)."""
    return dict(RISK_BANDS).get(risk_band(ratio), NO_VALUE_COLOR)


def risk_legend() -> str:
    """One-line legend for the overlay (plain text; the GUI may render it in colour)."""
    low = biomech_constants.RISK_THRESHOLD * (1 - biomech_constants.RISK_TRANSITION)
    high = biomech_constants.RISK_THRESHOLD * (1 + biomech_constants.RISK_TRANSITION)
    return f"green: load/strength < {low:g}   amber: {low:g}-{high:g}   red: > {high:g}   grey: not computed"


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
