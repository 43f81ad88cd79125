"""Sliding-window inference with region-of-interest cropping on the canonical working grid.

Pipeline: reorient to LPS, anti-alias and resample to the network's isotropic spacing, find the body ROI with a
coarse low-resolution pass (Otsu threshold at twice the working spacing, largest component; Otsu 1979), run MONAI's
``sliding_window_inference`` (Gaussian-weighted overlap) only inside that ROI, and return class labels plus the
per-voxel confidence (max softmax probability) on the working grid.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from spinekit.io import Volume, reorient, resample_to_spacing
from spinekit.segment.guidance import guidance_channels
from spinekit.segment.networks import TaskConfig
from spinekit.segment.synthesis import normalise_real

log = logging.getLogger(__name__)

#: Margin (mm) added around the body ROI so the network sees context at the skin.
ROI_MARGIN_MM = 15.0
#: Body parts smaller than this share of the largest one are left out of the ROI (the scanner table, noise). On MRI
#: the body often falls apart under an Otsu threshold (dark muscle between bright fat and fluid), so every large
#: part counts, not only the largest.
ROI_MIN_PART_SHARE = 0.1
#: Extent (mm) of the slices repeated beyond a cranial field-of-view edge (see ``_edge_padding``).
EDGE_PAD_MM = 30.0
#: Extent (mm) of the slices repeated beyond a caudal field-of-view edge that cuts the lumbar column (see
#: ``_edge_padding``).
CAUDAL_EDGE_PAD_MM = 12.0
#: Extent (mm) of the slices repeated beyond both axial ends for the muscle network (see ``_edge_padding``).
MUSCLE_EDGE_PAD_MM = 6.0
#: Window overlap, as nnU-Net (Isensee et al. 2021): with Gaussian weighting every voxel is averaged over up to 8
#: shifted windows. Against 0.25 (MONAI's default, half the cost) on ../shared/data/ct_lumbar_3mm: vertebrae Dice
#: 0.889 -> 0.898, T12 at the field-of-view edge 0.77 -> 0.85, psoas 0.71 -> 0.74; Dixon multifidus 0.44 -> 0.54;
#: T2 phantom sacrum 0.09 -> 0.73 (``benchmarks/bench_segment.py``).
OVERLAP = 0.5


@dataclass
class SemanticPrediction:
    """Class labels and confidence on the working grid, and the ROI used (index bounds, k-j-i)."""

    labels: Volume
    confidence: Volume
    roi: tuple[slice, slice, slice]
    seconds: float


def to_network_grid(image: Volume, spacing_mm: float) -> Volume:
    """LPS orientation, Gaussian anti-aliasing where we downsample, isotropic ``spacing_mm``."""
    oriented = reorient(image, "LPS")
    sigma = [max(0.0, (spacing_mm - s) / 2.355) for s in oriented.spacing]  # FWHM = target spacing
    sitk_image = sitk.Cast(oriented.to_sitk(), sitk.sitkFloat32)
    if max(sigma) > 0.05:
        sitk_image = sitk.SmoothingRecursiveGaussian(sitk_image, [max(s, 1e-3) for s in sigma])
    return resample_to_spacing(Volume.from_sitk(sitk_image), (spacing_mm,) * 3)


def body_roi(image: Volume, margin_mm: float = ROI_MARGIN_MM) -> tuple[slice, slice, slice]:
    """Bounding box (k, j, i slices) of the body: Otsu at half resolution, every large 3D part, plus margin."""
    from skimage.filters import threshold_otsu

    array = image.array.astype(np.float32)
    coarse = array[::2, ::2, ::2]
    full = tuple(slice(0, n) for n in array.shape)
    if coarse.size == 0 or np.ptp(coarse) <= 0:
        return full
    mask = coarse > threshold_otsu(coarse)
    mask = ndimage.binary_opening(mask, iterations=1)
    if not mask.any():
        return full
    parts, n = ndimage.label(mask)
    sizes = ndimage.sum(mask, parts, range(1, n + 1))
    keep = np.flatnonzero(sizes >= ROI_MIN_PART_SHARE * sizes.max()) + 1
    idx = np.argwhere(np.isin(parts, keep)) * 2
    margin = int(np.ceil(margin_mm / min(image.spacing)))
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 2 + margin, array.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _edge_padding(
    roi: tuple[slice, ...], shape: tuple[int, ...], config: TaskConfig, caudal: bool = False
) -> list[tuple[int, int]]:
    """Padding (k, j, i) that repeats the edge slices where the ROI reaches the scan's first or last axial slice
    (added after the crop; ``predict`` moves guidance clicks with it).

    Spine network: the column always continues cranially beyond a lumbar field of view, so repeating the top slices
    ``EDGE_PAD_MM`` upwards shows a vertebra cut by the field of view as continuing, instead of ending in an empty
    border. Measured with ``benchmarks/bench_segment.py`` (overlap 0.5): ct_lumbar_3mm T12 Dice 0.74 -> 0.85, all
    vertebrae 0.882 -> 0.898. Its caudal edge is left alone: there the scan ends in the pelvis, and repeated slices
    invented sacrum (sacrum 0.73 -> 0.68, discs 0.85 -> 0.80 when both ends were padded). With ``caudal`` (a scan
    whose lowest slice cuts the lumbar column above the sacrum, as axial MRI stacks often do; ``api``) the caudal end
    is repeated ``CAUDAL_EDGE_PAD_MM``: on MRI phantoms cut through L3, L4 or L5 the cut vertebra went 0.72 / 0.64 /
    0.51 -> 0.76 / 0.72 / 0.69 (30 mm: 0.75 / 0.69 / 0.58), the other levels within 0.02, CT unchanged; on the real
    Dixon stack (L2-L5) the lowest vertebra went from a 7 cm3 fragment to 27 cm3.

    Muscle network: both ends, ``MUSCLE_EDGE_PAD_MM`` only; without it the outermost slices of an axial stack came
    out nearly empty. On CT and T2 phantoms cut to a 4 mm axial L2-L5 stack (3 seeds each) psoas / QL / multifidus /
    erector spinae went 0.931 / 0.878 / 0.902 / 0.955 -> 0.941 / 0.905 / 0.905 / 0.957 (12 mm: 0.945 / 0.915 /
    0.908 / 0.959). On the real scans, looked at as well (so not independent), 6 mm raised Dixon multifidus / erector
    spinae 0.59 / 0.82 -> 0.61 / 0.85 and cost ct_lumbar_3mm psoas 0.74 -> 0.73, where 12 mm cost multifidus
    (0.52) and 30 mm did too (0.54): 6 mm is the smaller, safer choice.
    """
    top = roi[0].stop == shape[0]
    if config.task == "spine":
        below = int(round(CAUDAL_EDGE_PAD_MM / config.spacing_mm)) if caudal and roi[0].start == 0 else 0
        return [(below, int(round(EDGE_PAD_MM / config.spacing_mm)) if top else 0), (0, 0), (0, 0)]
    n = int(round(MUSCLE_EDGE_PAD_MM / config.spacing_mm))
    return [(n if roi[0].start == 0 else 0, n if top else 0), (0, 0), (0, 0)]


#: Networks whose prediction is averaged with that of the left-right mirrored input (mirroring test-time
#: augmentation, as nnU-Net; Isensee et al. 2021, Nat Methods 18:203). The classes are side-agnostic and training
#: flips left-right, so the mirror is a second, equally valid reading. Measured with the shipped weights
#: (``benchmarks/bench_segment.py``): muscles, Dixon multifidus 0.68 -> 0.74, all other muscle scores equal or up.
#: Spine: first tried in sessions 13 and 15 and left out, because a sagittal MRI slice lost its sacrum and so its
#: levels; since the column without sacrum is read again continued below the scan (``api.column_cut_caudally``)
#: that slice keeps them, and with ``spine-s93-step2600`` real CT vertebrae 0.907 -> 0.910 (T12 0.864 -> 0.866, L1
#: 0.893 -> 0.896, network vertebra class 0.79 -> 0.81, discs 0.859 -> 0.857), sagittal MRI bodies 0.745 -> 0.748,
#: T2 phantom vertebrae / discs / sacrum 0.79 / 0.83 / 0.84 -> 0.80 / 0.84 / 0.85 (canal 0.82 -> 0.81), levels
#: 5 of 5 sagittal slices and 18 of 18 rib phantoms (``benchmarks/bench_levels.py``) as before.
MIRROR_AVERAGED_TASKS = ("muscles", "spine")


def predict(
    network,
    config: TaskConfig,
    image: Volume,
    device: str = "cpu",
    use_roi: bool = True,
    guidance: dict | None = None,
    network_grid: Volume | None = None,
    pad_caudal: bool = False,
) -> SemanticPrediction:
    """Semantic classes of ``image`` on the working grid (automatic mode unless ``guidance`` clicks are given);
    ``pad_caudal``: the scan's caudal end cuts the spinal column (see ``_edge_padding``)."""
    import torch
    from monai.inferers import sliding_window_inference

    start = time.perf_counter()
    grid = network_grid if network_grid is not None else to_network_grid(image, config.spacing_mm)
    roi = body_roi(grid) if use_roi else tuple(slice(0, n) for n in grid.array.shape)
    crop = normalise_real(grid.array[roi])
    pad = _edge_padding(roi, grid.array.shape, config, pad_caudal)
    if guidance:  # clicks are crop indices (k, j, i): move them with the padding before the crop
        guidance = {
            name: [[c + lo for c, (lo, _) in zip(p, pad, strict=True)] for p in ps] for name, ps in guidance.items()
        }
    x = guidance_channels(np.pad(crop, pad, mode="edge"), guidance, config.classes)
    with torch.inference_mode():
        tensor = torch.from_numpy(x[None]).to(device)

        def probabilities(batch):
            logits = sliding_window_inference(
                batch, config.patch, sw_batch_size=2, predictor=network, overlap=OVERLAP, mode="gaussian",
                padding_mode="constant", cval=0.0,
            )  # fmt: skip
            return torch.softmax(logits, dim=1)

        prob = probabilities(tensor)
        if config.task in MIRROR_AVERAGED_TASKS:  # array axis 2 is LPS x (left-right)
            prob = (prob + probabilities(tensor.flip(-1)).flip(-1)) / 2
        inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad, crop.shape, strict=True))
        prob = prob[0][(slice(None), *inner)]
        confidence, labels = prob.max(dim=0)
    labels_full = np.zeros(grid.array.shape, dtype=np.uint8)
    confidence_full = np.zeros(grid.array.shape, dtype=np.float32)
    labels_full[roi] = labels.cpu().numpy().astype(np.uint8)
    confidence_full[roi] = confidence.cpu().numpy()
    return SemanticPrediction(
        grid.with_array(labels_full), grid.with_array(confidence_full), roi, time.perf_counter() - start
    )
