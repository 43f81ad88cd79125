"""Region operations of a click edit: flood from the click, orphans of a cut, the narrowest neck of a leak."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)


def flood_region(candidate: np.ndarray, seed: tuple[int, int, int]) -> np.ndarray:
    """Face-connected region of ``candidate`` containing ``seed`` (empty when the seed is not a candidate)."""
    if not candidate[seed]:
        return np.zeros(candidate.shape, dtype=bool)
    from skimage.segmentation import flood

    return flood(candidate, seed, connectivity=1)


def cut_off_orphans(remaining: np.ndarray, ball: np.ndarray) -> np.ndarray:
    """Pieces of ``remaining`` inside ``ball`` that no longer touch its largest component (orphans of a cut)."""
    components, n = ndimage.label(remaining)
    if n <= 1:
        return np.zeros(remaining.shape, dtype=bool)
    sizes = np.bincount(components.ravel())[1:]
    main = int(np.argmax(sizes)) + 1
    orphans = (components != main) & (components > 0)
    inside = ndimage.labeled_comprehension(ball, components, range(1, n + 1), np.all, bool, False)
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = inside
    return orphans & keep[components]


def neck_split(mask, depth, ball, centre, distance_mm, radius) -> np.ndarray:
    """The click's side of the narrowest neck between the click and the main body (marker watershed on -EDT)."""
    from skimage.segmentation import watershed

    markers = np.zeros(mask.shape, dtype=np.int32)
    body = mask & (distance_mm > radius)
    if not body.any():
        # The structure fits inside the click's reach: the body marker is its deepest point far from the click.
        score = np.where(mask, depth * distance_mm, -1.0)
        body = np.zeros(mask.shape, dtype=bool)
        body[np.unravel_index(int(np.argmax(score)), mask.shape)] = True
    markers[body] = 1
    seed = mask & (distance_mm <= max(1e-6, min(float(depth[centre]), radius) * 0.5))
    seed[centre] = True
    markers[seed & ~body] = 2
    regions = watershed(-depth, markers, mask=mask)
    side = (regions == 2) & ball
    if side.sum() > 0.5 * mask.sum():
        log.info("negative click: no neck separates the click from the body; removing the click's neighbourhood only")
        side = mask & (distance_mm <= max(float(depth[centre]), 1.0))
    return side
