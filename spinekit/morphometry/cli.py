"""``spinekit measure``: every morphometric of one subject as a tidy table plus a QC figure."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spinekit.errors import InputError
from spinekit.io import check_label_grid, read_labels, read_volume

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, help="CT or MRI the spine labels belong to (optional)")
    parser.add_argument("--spine", type=Path, required=True, help="spine label map (VerSe vertebrae, discs, canal)")
    parser.add_argument("--muscles", type=Path, help="muscle label map (spinekit numbering)")
    parser.add_argument("--fat", type=Path, help="Dixon fat image (with --water) for muscle fat fraction")
    parser.add_argument("--water", type=Path, help="Dixon water image (with --fat)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", help="table format (default csv)")
    parser.add_argument("--subject", default="", help="subject identifier written to every row")
    parser.add_argument("--no-figure", action="store_true", help="skip measure.png")


def measure_files(
    spine_path: Path,
    out: Path,
    image_path: Path | None = None,
    muscles_path: Path | None = None,
    fat_path: Path | None = None,
    water_path: Path | None = None,
    fmt: str = "csv",
    subject: str = "",
    figure: bool = True,
    progress=None,
) -> list[Path]:
    """Read the inputs, measure, write ``metrics.csv``/``metrics.parquet`` and ``measure.png`` into ``out``."""
    from spinekit.morphometry.context import build_spine_model
    from spinekit.morphometry.figure import write_figure
    from spinekit.morphometry.measure import measure_subject
    from spinekit.tables import write_table

    if (fat_path is None) != (water_path is None):
        raise InputError("pass both --fat and --water (Dixon), or neither")
    image = read_volume(image_path) if image_path else None
    spine = read_labels(spine_path)
    if image is not None:
        check_label_grid(image, spine)
    muscles = read_labels(muscles_path) if muscles_path else None
    fat = read_volume(fat_path) if fat_path else None
    water = read_volume(water_path) if water_path else None
    model = build_spine_model(spine)
    table = measure_subject(
        spine,
        image,
        muscles,
        fat,
        water,
        subject=subject or spine_path.name.split(".")[0],
        progress=progress,
        model=model,
    )
    out.mkdir(parents=True, exist_ok=True)
    written = [write_table(table, out / f"metrics.{'parquet' if fmt == 'parquet' else 'csv'}", fmt)]
    if figure:
        written.append(write_figure(model, table, out / "measure.png", image=image, muscles=muscles))
    return written


def run(args: argparse.Namespace) -> int:
    from spinekit.progress import tqdm_progress

    with tqdm_progress("measure") as progress:
        written = measure_files(
            args.spine,
            args.out,
            args.image,
            args.muscles,
            args.fat,
            args.water,
            args.format,
            args.subject,
            not args.no_figure,
            progress,
        )
    for path in written:
        print(path)
    return 0


def demo(workdir: Path, phantom_dir: Path) -> list[Path]:
    """Measure the demo phantom (``image``, ``spine``, ``muscles`` .nii.gz) into ``workdir/measure``."""
    muscles = phantom_dir / "muscles.nii.gz"
    return measure_files(
        phantom_dir / "spine.nii.gz",
        Path(workdir) / "measure",
        image_path=phantom_dir / "image.nii.gz",
        muscles_path=muscles if muscles.exists() else None,
        subject="phantom",
    )
