"""Intensity ranges that decide which voxels a click may add (robust statistics of the structure and its rim)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spinekit.segment.clicks import robust_sigma

if TYPE_CHECKING:
    from spinekit.segment.interactive_types import ClickWindow, InteractiveSettings


def structure_range(values: np.ndarray, settings: InteractiveSettings) -> tuple[float, float]:
    """Robust intensity range of a structure's voxels, tolerant of a wrong part (leak) in the mask.

    The low end is the low percentile, but never below median - k robust SD: a leak into darker tissue (fat
    in a muscle mask) must not open the range to that tissue. The high end is the high percentile only,
    because bone has a legitimate bright second mode (the cortex) that a median-based bound would cut.
    """
    low, high = np.percentile(values, settings.percentiles)
    floor = float(np.median(values)) - settings.negative_k * robust_sigma(values)
    return max(float(low), floor), float(high)


def boundary_range(
    inside: np.ndarray, rim: np.ndarray, around: np.ndarray, settings: InteractiveSettings
) -> tuple[float, float]:
    """Intensity range of a structure: its robust percentiles, widened to the half-way (50 % partial-volume)
    level between its boundary tissue and the tissue around it.

    A voxel on a blurred boundary between tissues of intensities a and b is more than half a when it is closer
    to a than to b, so the threshold that reproduces the true boundary is (a + b) / 2 (the half-maximum rule
    of CT bone segmentation; e.g. Prevrhal et al. 1999, Phys Med Biol 44:751). ``a`` is the median of the
    structure's second voxel layer (``rim``: the cortex of a bone, not its marrow), ``b`` the median of the
    free voxels next to the structure that are clearly darker (below the low percentile) or brighter.
    """
    low, high = structure_range(inside, settings)
    boundary = float(np.median(rim))
    typical = float(np.median(inside))
    spread = settings.negative_k * robust_sigma(inside)
    darker = around[around < min(low, typical - spread)]
    brighter = around[around > max(high, typical + spread)]
    # The neighbour that matters is the one nearest in intensity: the upper quartile of the darker voxels
    # (muscle, not fat, next to bone) and the lower quartile of the brighter ones.
    if darker.size >= settings.min_voxels:
        low = min(low, 0.5 * (boundary + float(np.percentile(darker, 75))))
    if brighter.size >= settings.min_voxels:
        high = max(high, 0.5 * (boundary + float(np.percentile(brighter, 25))))
    return low, high


def seed_range(
    image: np.ndarray, window: ClickWindow, allowed: np.ndarray, settings: InteractiveSettings
) -> tuple[float, float]:
    """Intensity range of a new structure: median +- k robust SD of the click's neighbourhood."""
    seed = (window.distance_mm <= settings.seed_radius_mm) & allowed
    values = image[seed] if seed.any() else image[window.centre][None]
    centre = float(np.median(values))
    # The floor keeps a perfectly flat neighbourhood (a synthetic image) from giving an empty range.
    spread = max(robust_sigma(values), 1e-3 * (abs(centre) + 1.0), 1e-6)
    k = settings.new_structure_k
    return centre - k * spread, centre + k * spread
