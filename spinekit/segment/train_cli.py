"""``spinekit train --task spine|muscles --out DIR``: train or fine-tune one of our segmentation networks."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from spinekit.segment.synthesis import SynthesisSettings
from spinekit.segment.train import DEFAULT_DATA_DIR, TrainSettings, train


def _axial_half(spec: str) -> str:
    """``SOURCE:inferior`` or ``SOURCE:superior`` (``dataset.axial_half``)."""
    from spinekit.segment.dataset import AXIAL_HALVES

    source, _, half = spec.partition(":")
    if not source or half not in AXIAL_HALVES:
        raise argparse.ArgumentTypeError(f"{spec!r}: write SOURCE:HALF with HALF one of {', '.join(AXIAL_HALVES)}")
    return spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["spine", "muscles"], required=True)
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoint, weights, settings)")
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    parser.add_argument("--batch", type=int, default=TrainSettings.batch)
    parser.add_argument("--lr", type=float, default=TrainSettings.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phantoms", type=int, default=TrainSettings.n_phantoms, help="phantoms generated at start")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="real label maps (../shared/data)")
    parser.add_argument("--holdout", default="ct_lumbar_3mm,mri_axial_dixon_L2L5", help="real sources left out")
    parser.add_argument("--holdout-images", default="", help="real sources used as label maps only, never images")
    parser.add_argument("--ct-like-fraction", type=float, default=0.3, help="share of CT-like synthetic contrast")
    parser.add_argument(
        "--ct-hu-fraction", type=float, default=SynthesisSettings.ct_hu_fraction,
        help="share of samples synthesised in Hounsfield units (sources with a tissue table)",
    )  # fmt: skip
    parser.add_argument(
        "--tissue-class-fraction", type=float, default=SynthesisSettings.tissue_class_fraction,
        help="share of random-contrast samples where labels of one tissue share one intensity (SynthSeg classes)",
    )  # fmt: skip
    parser.add_argument(
        "--negatives", type=int, default=TrainSettings.n_negatives,
        help="non-spine subjects (limbs, heads) generated at start as all-background samples",
    )  # fmt: skip
    parser.add_argument("--real-weight", type=float, default=1.0, help="sampling weight of real label maps")
    parser.add_argument(
        "--sagittal-weight", type=float, default=TrainSettings.sagittal_weight,
        help="sampling weight of all real sagittal MRI slices together (spine task)",
    )  # fmt: skip
    parser.add_argument(
        "--axial-half", type=_axial_half, action="append", default=[],
        help="SOURCE:inferior|superior: train on that half of a real source only (within-subject cross-validation)",
    )  # fmt: skip
    parser.add_argument(
        "--spacing-mm", type=float, default=None, help="working resolution in mm (default: the task's, 3 mm)"
    )
    parser.add_argument("--max-minutes", type=float, default=90.0, help="wall-clock budget; stops cleanly")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--finetune-from", type=Path, help="start from these weights (<task>.pt)")
    parser.add_argument(
        "--add", type=Path, action="append", default=[], help="saved corrections (image + <task>.nii.gz); repeatable"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    settings = TrainSettings(
        task=args.task, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, n_phantoms=args.phantoms,
        data_dir=str(args.data_dir), holdout=tuple(h for h in args.holdout.split(",") if h),
        holdout_images=tuple(h for h in args.holdout_images.split(",") if h),
        n_negatives=args.negatives, max_minutes=args.max_minutes, real_source_weight=args.real_weight,
        sagittal_weight=args.sagittal_weight, spacing_mm=args.spacing_mm,
        axial_halves=tuple(args.axial_half),
        synthesis=replace(
            SynthesisSettings(), ct_like_fraction=args.ct_like_fraction, ct_hu_fraction=args.ct_hu_fraction,
            tissue_class_fraction=args.tissue_class_fraction,
        ), threads=args.threads,
        extra_dirs=tuple(str(p) for p in args.add),
    )  # fmt: skip
    with tqdm(total=settings.steps, desc=f"train {args.task}") as bar:

        def progress(step: int, total: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.refresh()

        weights = train(settings, args.out, args.resume, args.finetune_from, args.device, progress)
    print(weights)
    return 0
