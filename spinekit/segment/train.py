"""Training loop: seeded, resumable, atomic checkpoints, CPU or GPU.

Loss: marginal cross-entropy for partially labelled sources (Shi et al. 2021, Med Image Anal 70:101979) plus soft
Dice (Milletari et al. 2016) over classes the sample labels fully. Optimiser AdamW (Loshchilov & Hutter 2019),
learning rate 2e-3 with cosine decay, as small 3D U-Nets commonly use (Isensee et al. 2021 use SGD 1e-2 with far
longer schedules, which a 90-minute CPU budget does not allow).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from spinekit import labels as lb
from spinekit.errors import InputError
from spinekit.segment.dataset import LabelMap, axial_half, from_phantom, membership, real_sources, sample_patch
from spinekit.segment.guidance import guidance_channels, simulate_clicks
from spinekit.segment.negatives import non_spine_sources
from spinekit.segment.networks import TaskConfig, build_network, task_config
from spinekit.segment.sagittal2d import TOTAL_WEIGHT
from spinekit.segment.synthesis import SynthesisSettings

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass
class TrainSettings:
    """Everything that determines a training run (written to the output folder for reproducibility).

    Attributes:
        task: "spine" or "muscles".
        steps: optimiser steps.
        batch: patches per step.
        lr: peak learning rate.
        seed: seeds numpy and torch; the same seed and settings give the same run on the same device.
        n_phantoms: phantoms generated at start (random anatomy) as label-map sources.
        data_dir: real label maps (``../shared/data``); missing folders are skipped.
        holdout: real sources left out for evaluation (leave-one-out).
        holdout_images: real sources whose label map is used for synthesis but whose real image is never shown.
        click_fraction: share of samples with simulated DeepEdit clicks (the rest: zero guidance, automatic mode).
        real_image_fraction: share of samples that use the source's own image instead of a synthetic one.
        checkpoint_every: steps between checkpoints.
        max_minutes: wall-clock budget; training stops cleanly (checkpoint written) when it is spent.
        threads: torch CPU threads.
        extra_dirs: folders of saved corrections (``spinekit train --add``).
        real_source_weight: sampling weight of a real label map relative to one phantom (real maps carry organs
            and real anatomy that phantoms lack).
        sagittal_weight: sampling weight of all real sagittal MRI slices together (``sagittal2d``), spine task.
        n_negatives: non-spine subjects (limbs, heads; all background) generated at start (``negatives``).
        axial_halves: ``"source:inferior"`` or ``"source:superior"``: only that half of a real source is used
            (``dataset.axial_half``), for within-subject cross-validation.
        spacing_mm: working resolution (mm) when it differs from the task's default (``networks.TASKS``); written
            to the exported config, so inference runs at the spacing the network was trained at.
    """

    task: str = "spine"
    steps: int = 2000
    batch: int = 2
    lr: float = 2e-3
    seed: int = 0
    n_phantoms: int = 8
    data_dir: str = str(DEFAULT_DATA_DIR)
    holdout: tuple[str, ...] = ("ct_lumbar_3mm", "mri_axial_dixon_L2L5")
    holdout_images: tuple[str, ...] = ()
    click_fraction: float = 0.3
    real_image_fraction: float = 0.2
    checkpoint_every: int = 50
    max_minutes: float = 90.0
    threads: int = 1
    extra_dirs: tuple[str, ...] = ()
    real_source_weight: float = 1.0
    sagittal_weight: float = TOTAL_WEIGHT
    n_negatives: int = 0
    axial_halves: tuple[str, ...] = ()
    spacing_mm: float | None = None
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)


def marginal_loss(logits, target, matrices, n_classes: int):
    """Marginal CE + soft Dice. ``matrices[b]`` maps target values to allowed classes (see dataset.membership)."""
    import torch
    import torch.nn.functional as F

    log_prob = F.log_softmax(logits, dim=1)
    prob = log_prob.exp()
    ce_terms, dice_terms = [], []
    for b in range(logits.shape[0]):
        m = matrices[b]  # (n_targets, n_classes)
        allowed = m[target[b]]  # (k, j, i, n_classes)
        allowed = allowed.permute(3, 0, 1, 2)
        masked = log_prob[b] + torch.log(allowed.clamp_min(1e-12))
        ce_terms.append(-torch.logsumexp(masked, dim=0).mean())
        exact = (m.sum(dim=1) == 1) & (torch.arange(m.shape[0], device=m.device) < n_classes)
        ambiguous_classes = m[~exact].sum(dim=0) > 0 if (~exact).any() else torch.zeros(n_classes, dtype=torch.bool)
        for c in range(1, n_classes):
            if bool(ambiguous_classes[c]) or (c == 0):
                continue
            truth = (target[b] == c).float()
            p = prob[b, c]
            dice_terms.append(1 - (2 * (p * truth).sum() + 1) / (p.sum() + truth.sum() + 1))
    loss = torch.stack(ce_terms).mean()
    if dice_terms:
        loss = loss + torch.stack(dice_terms).mean()
    return loss


def phantom_sources(config: TaskConfig, n: int, rng: np.random.Generator) -> list[LabelMap]:
    """``n`` random phantoms (levels, size, curvature, fractures, lesions, transitional anatomy, ribs, CT or MR)."""
    try:
        from spinekit.phantom import PhantomConfig, make_phantom
    except ImportError:  # the generator is optional for training; real label maps still work
        log.warning("spinekit.phantom is not available: training on real label maps only")
        return []
    sources = []
    for index in range(n):
        spacing = float(rng.choice([2.0, 2.5]))
        options = {
            "modality": str(rng.choice(["ct", "t1", "t2"])),
            "seed": int(rng.integers(0, 2**31 - 1)),
            "levels": str(rng.choice(["T10-S1", "T12-S1", "L1-S1", "T11-L5", "T8-L2"])),
            "spacing": (spacing, spacing, spacing),
            "lordosis_deg": float(rng.uniform(20, 60)),
            "variability": float(rng.uniform(0.0, 0.1)),
            "sex": str(rng.choice(["male", "female"])),
            "fracture": {"level": "L1", "type": str(rng.choice(["wedge", "crush", "biconcave"])), "height_loss": 0.3}
            if rng.random() < 0.2
            else None,
            "transitional": [None, None, None, "L6", "T13"][int(rng.integers(5))],
        }
        options["rib_levels"] = random_rib_levels(options["levels"], options["transitional"], rng)
        phantom = _make_phantom(PhantomConfig, make_phantom, options)
        if phantom is not None:
            sources.append(from_phantom(phantom, config, name=f"phantom{index}"))
    return sources


def random_rib_levels(levels: str, transitional: str | None, rng: np.random.Generator) -> tuple[str, ...]:
    """Ribs on every thoracic vertebra of a phantom (T13 included), in 1 of 10 also on L1 (a lumbar rib) and in 1
    of 10 not on T12 (11 rib pairs): ribs are bone the spine network must leave out of the vertebrae."""
    from spinekit.phantom import PhantomConfig
    from spinekit.phantom.config import validate

    chain = validate(PhantomConfig(levels=levels, transitional=transitional))  # the levels, T13 or L6 inserted
    ribs = [lb.VERTEBRA_NAMES[v] for v in chain if 8 <= v <= 19 or v == lb.T13]
    draw = rng.random()
    if draw < 0.1 and 20 in chain:
        ribs.append("L1")
    elif draw < 0.2 and "T12" in ribs and len(ribs) > 1:
        ribs.remove("T12")
    return tuple(ribs)


def _sampling_weight(source: LabelMap, real_weight: float) -> float:
    """A source's sampling weight relative to one phantom: its own, else ``real_weight`` for real label maps."""
    if source.sample_weight is not None:
        return source.sample_weight
    return 1.0 if source.name.startswith("phantom") else real_weight


def _make_phantom(config_cls, make, options: dict):
    """Build a phantom, dropping options this version of the generator does not know."""
    names = set(getattr(config_cls, "__dataclass_fields__", options))
    kwargs = {k: v for k, v in options.items() if k in names}
    for _ in range(2):
        try:
            return make(config_cls(**kwargs))
        except (TypeError, ValueError) as exc:
            log.warning("phantom options %s rejected (%s); retrying with defaults", kwargs, exc)
            kwargs = {k: kwargs[k] for k in ("modality", "seed") if k in kwargs}
    return None


def correction_sources(folders: tuple[str, ...], config: TaskConfig) -> list[LabelMap]:
    """Saved correction sessions: each folder holds image.nii.gz and <task>.nii.gz (our labels) on one grid."""
    from spinekit.io import read_labels, read_volume, resample_like
    from spinekit.segment.dataset import muscle_targets, spine_targets, to_working_grid
    from spinekit.segment.synthesis import normalise_real

    sources = []
    for folder in folders:
        for image_path in sorted(Path(folder).glob("**/image.nii.gz")):
            labels_path = image_path.parent / f"{config.task}.nii.gz"
            if not labels_path.is_file():
                continue
            labels = to_working_grid(read_labels(labels_path), config.spacing_mm, True)
            image = resample_like(read_volume(image_path), labels).array
            target = spine_targets(labels.array) if config.task == "spine" else muscle_targets(labels.array)
            generation = labels.array.astype(np.int32)
            sources.append(LabelMap(str(image_path.parent), generation, target, image=normalise_real(image)))
    if folders and not sources:
        raise InputError(f"no image.nii.gz + {config.task}.nii.gz pairs found under {list(folders)}")
    return sources


def _save_atomic(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    settings: TrainSettings,
    out_dir: Path,
    resume: bool = False,
    finetune_from: Path | None = None,
    device: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Path:
    """Train a network; returns the path of the exported weights ``out_dir/<task>.pt`` (+ ``<task>.json``)."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = task_config(settings.task)
    if settings.spacing_mm is not None:
        config = replace(config, spacing_mm=float(settings.spacing_mm))
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    network = build_network(config).to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=1e-4)
    checkpoint = out_dir / "checkpoint.pt"
    step = 0
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        network.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = int(state["step"])
        rng.bit_generator.state = json.loads(state["rng"])
        torch.manual_seed(settings.seed + step)
        log.info("resumed from step %d", step)
    elif finetune_from is not None:
        network.load_state_dict(torch.load(finetune_from, map_location=device, weights_only=True))
    sources_rng = np.random.default_rng(settings.seed + 1)  # sources are the same however often we resume
    sources = phantom_sources(config, settings.n_phantoms, sources_rng)
    sources += non_spine_sources(config, settings.n_negatives, sources_rng)
    real = real_sources(Path(settings.data_dir), config, tuple(settings.holdout), settings.sagittal_weight)
    for source in real:
        if source.name.split("/")[0] in settings.holdout_images:
            source.image = None
    halves = dict(spec.split(":", 1) for spec in settings.axial_halves)
    sources += [axial_half(s, halves[s.name]) if s.name in halves else s for s in real]
    sources += correction_sources(tuple(settings.extra_dirs), config)
    if not sources:
        raise InputError("no training sources: spinekit.phantom is missing and no real label maps were found")
    log.info("training %s on %d sources: %s", settings.task, len(sources), [s.name for s in sources])
    weights = np.array([_sampling_weight(s, settings.real_source_weight) for s in sources])
    weights /= weights.sum()
    (out_dir / "settings.json").write_text(json.dumps(_jsonable(settings), indent=1))
    start = time.monotonic()
    losses: list[float] = []
    network.train()
    while step < settings.steps:
        lr = settings.lr * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        for group in optimiser.param_groups:
            group["lr"] = lr
        images, targets, matrices = [], [], []
        for _ in range(settings.batch):
            # Equal weights keep the original integer draw so earlier runs replay bit for bit.
            pick = (
                rng.integers(len(sources)) if np.allclose(weights, weights[0]) else rng.choice(len(sources), p=weights)
            )
            source = sources[int(pick)]
            image, target = sample_patch(source, config, rng, settings.synthesis, settings.real_image_fraction)
            clicks = simulate_clicks(target, config.classes, rng) if rng.random() < settings.click_fraction else None
            images.append(guidance_channels(image, clicks, config.classes))
            targets.append(target)
            matrices.append(torch.from_numpy(membership(config, source)).to(device))
        x = torch.from_numpy(np.stack(images)).to(device)
        y = torch.from_numpy(np.stack(targets)).to(device)
        loss = marginal_loss(network(x), y, matrices, config.n_classes)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        losses.append(loss.item())
        if progress is not None:
            progress(step, settings.steps, float(np.mean(losses[-20:])))
        out_of_time = (time.monotonic() - start) / 60 > settings.max_minutes
        if step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time:
            state = {
                "model": network.state_dict(),
                "optimiser": optimiser.state_dict(),
                "step": step,
                "rng": json.dumps(rng.bit_generator.state),
            }
            _save_atomic(state, checkpoint)
            export(network, config, out_dir, settings, step, float(np.mean(losses[-50:])))
        if out_of_time:
            log.warning("time budget of %.0f min spent at step %d", settings.max_minutes, step)
            break
    return export(network, config, out_dir, settings, step, float(np.mean(losses[-50:])) if losses else math.nan)


def export(network, config: TaskConfig, out_dir: Path, settings: TrainSettings, step: int, loss: float) -> Path:
    """Write the shippable weights (state dict only) and their JSON config atomically."""
    weights = Path(out_dir) / f"{config.task}.pt"
    _save_atomic({k: v.detach().cpu() for k, v in network.state_dict().items()}, weights)
    meta = {
        "name": config.task,
        "version": f"{config.task}-s{settings.seed}-step{step}",
        "config": config.to_json(),
        "training": {**_jsonable(settings), "steps_done": step, "final_loss": loss},
    }
    tmp = weights.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, weights.with_suffix(".json"))
    return weights


def _jsonable(settings: TrainSettings) -> dict:
    data = asdict(settings)
    data["holdout"] = list(settings.holdout)
    data["extra_dirs"] = list(settings.extra_dirs)
    data["holdout_images"] = list(settings.holdout_images)
    return data
