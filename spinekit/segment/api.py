"""``segment_image``: one call from an image to our spine and muscle label maps, with QC, timings and versions."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spinekit.errors import InputError
from spinekit.io import Volume, check_finite, check_geometry, resample_like
from spinekit.segment import qc
from spinekit.segment.backends import Progress, SegmentationResult, get_backend
from spinekit.segment.column import SACRUM, VERTEBRA, clean_columns
from spinekit.segment.inference import SemanticPrediction, predict, to_network_grid
from spinekit.segment.instances import assign_instances, muscle_midline_x, split_muscle_sides
from spinekit.segment.networks import load_model
from spinekit.segment.ribs import check_levels, check_named_levels

log = logging.getLogger(__name__)

TARGETS = ("spine", "muscles")
#: Fewest plausible vertebrae for a result to count as a spine (two are needed to order anything).
MIN_VERTEBRAE = 2
#: Share of vertebra instances with a plausible volume below which the result is garbage, not a spine.
MIN_PLAUSIBLE_SHARE = 0.5
#: More vertebra instances than a whole spine has (C1-S1 with L6/T13) means fragmentation, not anatomy.
MAX_VERTEBRAE = 26
#: Share of the network's bone (vertebra class) that must end up in plausible vertebra instances. Along a spine almost
#: all bone lies in the vertebrae between the discs; two long bones around a joint (a knee read as "vertebra, disc,
#: vertebra") leave most of their shafts outside any vertebra-sized instance.
MIN_BONE_IN_VERTEBRAE = 0.5
#: CT air is about -1000 HU; an image whose 1st percentile is below this is treated as CT.
CT_AIR_THRESHOLD_HU = -500.0


def guess_modality(image: Volume) -> str:
    """Return "ct" when the intensities look like Hounsfield units (air near -1000 HU), else "mr"."""
    sample = image.array[::4, ::4, ::4]
    return "ct" if sample.size and float(np.percentile(sample, 1)) < CT_AIR_THRESHOLD_HU else "mr"


def _postprocess(labels: Volume) -> Volume:
    """Fill holes and keep the largest component per label (``spinekit.postprocess``, shared with morphometry).

    Edge smoothing is off: at the 3 mm working grid a 0.5 mm Gaussian changes nothing but costs time.
    """
    from spinekit.postprocess import PostprocessConfig, postprocess_labels

    cleaned, _ = postprocess_labels(labels, PostprocessConfig(smooth_sigma_mm=0.0))
    return cleaned


#: An image finer than this share of the working spacing gets smooth label upsampling (``upsample_labels``);
#: nearer the working spacing, nearest neighbour keeps one-voxel structures that interpolation would thin away.
UPSAMPLE_BELOW_SHARE = 0.75


def to_image_grid(labels: Volume, image: Volume) -> Volume:
    """Working-grid labels onto the image grid: smooth surfaces on finer grids, nearest neighbour otherwise."""
    from spinekit.postprocess import upsample_labels

    if min(image.spacing) < UPSAMPLE_BELOW_SHARE * min(labels.spacing):
        return upsample_labels(labels, image)
    return resample_like(labels, image, is_label=True)


def column_cut_caudally(semantic: Volume) -> bool:
    """Whether the scan's caudal end cuts the spinal column: vertebrae but no sacrum in view, so the column goes on
    below the scan (classes of ``column``). The network may miss the cut vertebra itself, so its presence in the
    lowest slice is not required (real Dixon stack: nothing found in the lowest 28 mm)."""
    return bool((semantic.array == VERTEBRA).any() and not (semantic.array == SACRUM).any())


def _read_column(
    network, config, image: Volume, device: str, grid: Volume, hounsfield: Volume | None, midline_x: np.ndarray
) -> tuple[SemanticPrediction, Volume]:
    """The spine network's reading and its cleaned column (``column.clean_columns``); a column the scan's caudal end
    cuts is read once more, continued below the scan (``column_cut_caudally``, ``inference._edge_padding``)."""
    for pad_caudal in (False, True):
        prediction = predict(network, config, image, device, network_grid=grid, pad_caudal=pad_caudal)
        semantic = clean_columns(prediction.labels, hounsfield, midline_x)
        if pad_caudal or not column_cut_caudally(semantic):
            break
    return prediction, semantic


class SpinekitBackend:
    """Our own networks (``spinekit/models``): semantic classes, then instances and levels by anatomy."""

    name = "spinekit"

    def __init__(self, models_dir: str | Path | None = None):
        self.models_dir = Path(models_dir) if models_dir is not None else None

    def segment(
        self, image: Volume, targets: Sequence[str], modality: str, device: str, progress: Progress = None
    ) -> SegmentationResult:
        import torch

        result = SegmentationResult(qc={"flags": []})
        flags = result.qc["flags"]
        grids: dict[float, Volume] = {}
        spine_found = None
        for n, task in enumerate(t for t in TARGETS if t in targets):
            if progress:
                progress(n / len(targets), f"segmenting {task}")
            start = time.perf_counter()
            network, config, meta = load_model(task, self.models_dir, device)
            result.model_versions[task] = meta.get("version", "unknown")
            if config.spacing_mm not in grids:
                grids[config.spacing_mm] = to_network_grid(image, config.spacing_mm)
            grid = grids[config.spacing_mm]
            with torch.inference_mode():
                if task == "spine":
                    hounsfield = grid if modality == "ct" else None
                    midline_x = qc.body_midline_x(grid)
                    prediction, semantic = _read_column(network, config, image, device, grid, hounsfield, midline_x)
                else:
                    prediction = predict(network, config, image, device, network_grid=grid)
            mean_conf, low = qc.confidence_flag(prediction.confidence, prediction.labels)
            result.qc[f"{task}_mean_confidence"] = mean_conf
            if task == "spine":
                instances, ribs = assign_instances(semantic), None
                if hounsfield is not None:
                    instances, ribs = check_levels(instances, hounsfield)
                plausible = [
                    v for v, vol in instances.volumes_mm3.items()
                    if v != 26 and qc.VERTEBRA_VOLUME_MM3[0] <= vol <= qc.VERTEBRA_VOLUME_MM3[1]
                    and qc.vertebra_shaped(instances.spine, instances.spine.array == v)
                ]  # fmt: skip
                vertebrae = [v for v in instances.volumes_mm3 if v != 26]
                off_midline = qc.column_off_midline(semantic, midline_x)
                share = len(plausible) / max(len(vertebrae), 1)
                bone = int((semantic.array == 1).sum())
                in_vertebrae = int(np.isin(instances.spine.array, plausible).sum()) / max(bone, 1)
                spine_found = (
                    len(plausible) >= MIN_VERTEBRAE
                    and share >= MIN_PLAUSIBLE_SHARE
                    and len(vertebrae) <= MAX_VERTEBRAE
                    and in_vertebrae >= MIN_BONE_IN_VERTEBRAE
                    and low is None
                    and off_midline is None
                )
                spine = _postprocess(instances.spine)
                if spine_found:
                    flags.extend(instances.flags)
                    flags.extend(qc.spine_flags(spine, instances.levels, instances.levels_known))
                else:
                    detail = off_midline or (
                        f"{len(plausible)} of {len(vertebrae)} vertebra instances plausible, holding "
                        f"{100 * in_vertebrae:.0f}% of the bone"
                    )
                    detail += "; result emptied"
                    flags.append(qc.flag("no_spine_found", detail))
                    if low:
                        flags.append(low)
                    spine = spine.with_array(np.zeros_like(spine.array))
                result.qc["levels"] = [int(v) for v in instances.levels] if spine_found else []
                if ribs is not None:
                    result.qc["ribs"] = ribs if spine_found else {}
                result.qc["levels_known"] = bool(instances.levels_known and spine_found)
                result.spine = to_image_grid(spine, image)
            else:
                classes = prediction.labels
                muscles = _postprocess(split_muscle_sides(classes, muscle_midline_x(classes)))
                reason = None
                if low is not None or not (classes.array > 0).any():
                    reason = "low confidence or nothing found"
                elif spine_found is False:
                    reason = qc.muscles_implausible_without_spine(muscles, mean_conf)
                    if reason is None:
                        flags.append(qc.flag("muscles_without_spine", "no spine found; paired back muscles kept"))
                if reason:
                    flags.append(qc.flag("no_muscles_found", f"{reason}; muscle result emptied"))
                    muscles = muscles.with_array(np.zeros(muscles.array.shape, np.int16))
                else:
                    flags.extend(qc.muscle_flags(muscles))
                result.muscles = to_image_grid(muscles, image)
            result.timings[f"{task}_s"] = time.perf_counter() - start
        return result


def _empty_result(image: Volume, targets: Sequence[str], reason: str) -> SegmentationResult:
    """Empty label maps for ``targets`` on the image grid, flagged with ``reason``."""
    empty = image.with_array(np.zeros(image.array.shape, np.int16))
    result = SegmentationResult(qc={"flags": [], "levels": [], "levels_known": False})
    if "spine" in targets:
        result.spine = empty
        result.qc["flags"].append(qc.flag("no_spine_found", reason))
    if "muscles" in targets:
        result.muscles = empty
        result.qc["flags"].append(qc.flag("no_muscles_found", reason))
    return result


def segment_image(
    image: Volume,
    targets: Sequence[str] = TARGETS,
    modality: str = "auto",
    backend: str = "spinekit",
    device: str = "cpu",
    progress: Progress = None,
    **backend_options,
) -> SegmentationResult:
    """Segment ``image`` into our spine map (vertebrae 1-28, canal 60, discs 101-128) and muscle map (1-10).

    Args:
        image: CT or MRI volume (any orientation, any spacing).
        targets: any of "spine", "muscles".
        modality: "auto" (guessed from intensities), "ct" or "mr"; our networks are contrast-agnostic and use it
            only for reporting, TotalSegmentator uses it to choose "total" or "total_mr".
        backend: "spinekit", "totalsegmentator" or "nnunet".
        device: "cpu" or "cuda".
        progress: callback ``(fraction, message)``.
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise InputError(f"unknown targets {unknown or targets}; choose from {', '.join(TARGETS)}")
    if modality not in ("auto", "ct", "mr"):
        raise InputError(f"modality must be auto, ct or mr, not {modality!r}")
    check_geometry(image)
    check_finite(image)
    start = time.perf_counter()
    resolved = guess_modality(image) if modality == "auto" else modality
    engine = get_backend(backend, **backend_options)
    noise = qc.noise_only(image)
    if noise:
        result = _empty_result(image, targets, noise)
    else:
        result = engine.segment(image, tuple(targets), resolved, device, progress)
    result.qc.setdefault("flags", [])
    if backend != "spinekit" and resolved == "ct" and result.spine is not None:  # ours checks its own count
        rib_flags, result.qc["ribs"] = check_named_levels(result.spine, image)
        result.qc["flags"].extend(rib_flags)
    result.qc["modality"] = resolved
    result.qc["backend"] = backend
    result.timings["total_s"] = time.perf_counter() - start
    if progress:
        progress(1.0, "done")
    return result
