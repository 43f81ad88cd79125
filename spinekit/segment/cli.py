"""``spinekit segment IMAGE --out DIR``: spine.nii.gz, muscles.nii.gz and segment.json (versions, timings, QC)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from spinekit.io import atomic_path, read_labels, read_volume, write_labels

#: Spine labels scored in the demo's Dice printout: vertebrae, discs, canal.
_DEMO_CLASSES = {"vertebrae": lambda a: (a > 0) & (a < 29), "discs": lambda a: (a > 100) & (a < 129)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="CT or MRI image (NIfTI/NRRD/MHA or a DICOM folder)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--targets", default="spine,muscles", help="comma-separated: spine, muscles")
    parser.add_argument("--modality", default="auto", choices=["auto", "ct", "mr"])
    parser.add_argument("--backend", default="spinekit", choices=["spinekit", "totalsegmentator", "nnunet"])
    parser.add_argument("--nnunet-folder", type=Path, help="nnU-Net v2 results folder (with --backend nnunet)")
    parser.add_argument("--models-dir", type=Path, help="folder with <task>.pt/.json (default: shipped models)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def write_outputs(result, out: Path) -> list[Path]:
    """Write the label maps and segment.json atomically; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if result.spine is not None:
        written.append(write_labels(result.spine, out / "spine.nii.gz"))
    if result.muscles is not None:
        written.append(write_labels(result.muscles, out / "muscles.nii.gz"))
    report = {"model_versions": result.model_versions, "timings_s": result.timings, "qc": result.qc}
    tmp = atomic_path(out / "segment.json")
    tmp.write_text(json.dumps(report, indent=1, default=_json_default))
    os.replace(tmp, out / "segment.json")
    written.append(out / "segment.json")
    return written


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spinekit.segment.api import segment_image

    image = read_volume(args.image)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    options = {}
    if args.backend == "nnunet":
        options["model_folder"] = args.nnunet_folder
    if args.backend == "spinekit" and args.models_dir:
        options["models_dir"] = args.models_dir
    with tqdm(total=100, desc="segment", unit="%") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message)
            bar.update(int(fraction * 100) - bar.n)

        result = segment_image(image, targets, args.modality, args.backend, args.device, progress, **options)
    for path in write_outputs(result, args.out):
        print(path)
    for item in result.qc.get("flags", []):
        print(f"QC {item['flag']}: {item.get('detail', '')}")
    return 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B|/(|A|+|B|) (Dice 1945); NaN when both are empty."""
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else float("nan")


def demo(workdir: Path, phantom_dir: Path) -> list[Path]:
    """Segment ``phantom_dir/image.nii.gz`` into ``workdir/segment`` and print Dice against the phantom truth."""
    from spinekit.segment.api import segment_image

    image = read_volume(Path(phantom_dir) / "image.nii.gz")
    result = segment_image(image, ("spine", "muscles"))
    written = write_outputs(result, Path(workdir) / "segment")
    truth_path = Path(phantom_dir) / "spine.nii.gz"
    if truth_path.is_file() and result.spine is not None:
        truth = read_labels(truth_path).array
        pred = result.spine.array
        for name, select in _DEMO_CLASSES.items():
            print(f"segment: {name} Dice vs phantom truth = {dice(select(pred), select(truth)):.3f}")
        print(f"segment: levels {result.qc.get('levels')} (known: {result.qc.get('levels_known')})")
    return written
