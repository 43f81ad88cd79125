"""``spinekit phantom``: write a synthetic spine CT/MRI with exact ground truth (and optionally a follow-up)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spinekit.errors import InputError


def _fracture(text: str) -> dict:
    try:
        level, kind, loss = text.split(":")
        return {"level": level, "type": kind, "height_loss": float(loss)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fracture {text!r} must look like L1:wedge:0.3") from None


def _lesion(text: str) -> dict:
    try:
        level, kind, radius = text.split(":")
        return {"level": level, "kind": kind, "radius_mm": float(radius)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lesion {text!r} must look like L3:lytic:6") from None


def _collapse(text: str) -> tuple[str, float]:
    try:
        level, loss = text.split(":")
        return level, float(loss)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--collapse {text!r} must look like L1:0.3") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--modality", default="ct", choices=("ct", "t1", "t2"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", default="T12-S1", help="cranio-caudal range, e.g. T10-S1")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("SI", "SJ", "SK"))
    parser.add_argument("--lordosis", type=float, default=45.0, help="L1-S1 Cobb angle (deg)")
    parser.add_argument("--kyphosis", type=float, default=40.0, help="T4-T12 Cobb angle (deg)")
    parser.add_argument("--bmd", type=float, default=150.0, help="trabecular vBMD (mg/cm3)")
    parser.add_argument("--sex", default="male", choices=("male", "female"))
    parser.add_argument("--noise", type=float, default=None, help="noise SD (HU for CT); default per modality")
    parser.add_argument("--fracture", type=_fracture, default=None, help="LEVEL:wedge|crush|biconcave:LOSS")
    parser.add_argument("--lesion", type=_lesion, action="append", default=[], help="LEVEL:lytic|blastic:RADIUS_MM")
    parser.add_argument("--transitional", default=None, choices=("L6", "T13"))
    parser.add_argument("--fov", default="torso", choices=("torso", "spine"), help="whole torso (CT) or spine crop")
    parser.add_argument("--variability", type=float, default=0.0, help="relative SD of per-level size (per seed)")
    parser.add_argument("--followup", action="store_true", help="also write a follow-up scan to OUT/followup")
    parser.add_argument("--followup-seed", type=int, default=1)
    parser.add_argument(
        "--collapse",
        type=_collapse,
        action="append",
        default=[],
        help="follow-up collapse LEVEL:LOSS (e.g. L1:0.3) of the body only; implies --followup",
    )
    parser.add_argument(
        "--collapse-type", default="wedge", choices=("wedge", "crush", "biconcave"), help="shape of --collapse"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spinekit.phantom import FollowupConfig, PhantomConfig, make_followup, make_phantom

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file; pass a folder")
    config = PhantomConfig(
        modality=args.modality,
        seed=args.seed,
        levels=args.levels,
        spacing=tuple(args.spacing),
        lordosis_deg=args.lordosis,
        kyphosis_deg=args.kyphosis,
        noise_sd=args.noise,
        fracture=args.fracture,
        lesions=tuple(args.lesion),
        transitional=args.transitional,
        bmd_mg_cm3=args.bmd,
        sex=args.sex,
        field_of_view=args.fov,
        variability=args.variability,
    )
    followup = args.followup or bool(args.collapse)
    with tqdm(total=2 if followup else 1, desc="phantom", unit="scan") as bar:
        baseline = make_phantom(config)
        bar.update()
        written = {}
        if followup:
            second = make_followup(
                baseline,
                FollowupConfig(seed=args.followup_seed, collapse=dict(args.collapse), collapse_type=args.collapse_type),
            )
            baseline.truth["followup"] = second.truth["followup"]
            written.update({f"followup/{k}": v for k, v in second.write(args.out / "followup").items()})
            bar.update()
        written.update(baseline.write(args.out))
    for key, path in sorted(written.items()):
        print(f"{key}: {path}")
    return 0
