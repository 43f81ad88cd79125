"""DeepEdit guidance channels: simulated clicks in training, zeros in automatic mode, user clicks in correction.

Channel layout and click rendering are MONAI's ``AddGuidanceSignalDeepEditd`` (Diaz-Pinto et al. 2022, MONAI Label):
one channel per class name (background included), each a Gaussian-smoothed click map normalised to [0, 1].
Training simulates the initial seed clicks of ``AddInitialSeedPointMissingLabelsd`` (random interior voxels of each
present class) on a fraction of samples; the discrepancy-driven click loop (``FindDiscrepancyRegionsDeepEditd`` +
``AddRandomGuidanceDeepEditd``) needs a forward pass per click and is left to GPU training with the same channels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Click blob width in voxels of the 3 mm working grid (MONAI's default sigma is 3 voxels at ~1-1.5 mm).
CLICK_SIGMA_VOX = 1


def guidance_channels(
    image: np.ndarray, guidance: dict[str, list[list[int]]] | None, class_names: tuple[str, ...]
) -> np.ndarray:
    """Stack ``image`` (k, j, i) with one click channel per class: array ``(1 + n_classes, k, j, i)``."""
    if not guidance or not any(guidance.get(name) for name in class_names):
        return np.concatenate([image[None], np.zeros((len(class_names), *image.shape), np.float32)]).astype(np.float32)
    from monai.apps.deepedit.transforms import AddGuidanceSignalDeepEditd

    ordered = {name: list(guidance.get(name, [])) for name in class_names}
    transform = AddGuidanceSignalDeepEditd(keys="image", guidance="guidance", sigma=CLICK_SIGMA_VOX)
    out = transform({"image": image[None].astype(np.float32), "guidance": ordered})
    return np.asarray(out["image"], dtype=np.float32)


def simulate_clicks(
    target: np.ndarray,
    class_names: tuple[str, ...],
    rng: np.random.Generator,
    max_clicks: int = 3,
) -> dict[str, list[list[int]]]:
    """Random interior clicks per present class (initial DeepEdit seeds), as voxel (k, j, i) lists."""
    guidance: dict[str, list[list[int]]] = {}
    for index, name in enumerate(class_names):
        mask = target == index
        if not mask.any():
            guidance[name] = []
            continue
        interior = ndimage.binary_erosion(mask) if mask.sum() > 50 else mask
        points = np.argwhere(interior if interior.any() else mask)
        n = int(rng.integers(1, max_clicks + 1))
        chosen = points[rng.choice(len(points), size=min(n, len(points)), replace=False)]
        guidance[name] = chosen.tolist()
    return guidance
