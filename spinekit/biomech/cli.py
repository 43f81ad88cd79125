"""``spinekit biomech``: personalised OpenSim spine model, loads, vertebral strength and factor of risk.

Writes into ``--out``: ``model.osim`` (the personalised model), ``loads.csv`` (compression and shear per
intervertebral level and task, N), ``strength.csv`` (vBMD, CSA, strength per vertebra), ``risk.csv`` (load / strength
per vertebra and task, with class), ``flags.txt`` (every fallback used) and ``risk.png``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spine", type=Path, required=True, help="spine label map (VerSe vertebra labels)")
    parser.add_argument("--muscles", type=Path, help="muscle label map (spinekit numbering; odd = left)")
    parser.add_argument("--image", type=Path, help="CT (for bone density) or MRI the labels belong to")
    parser.add_argument("--modality", choices=("CT", "MRI"), default="CT", help="modality of --image (default CT)")
    parser.add_argument("--sex", choices=("male", "female"), required=True)
    parser.add_argument("--age", type=float, required=True, help="years")
    parser.add_argument("--height-cm", type=float, required=True)
    parser.add_argument("--weight-kg", type=float, required=True)
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="task names (default: all built-in) or user tasks "
        "'name:flex=30,lat=0,rot=0,left=5,right=5,arm=0,share=0.67'",
    )
    parser.add_argument(
        "--phantom-calibration",
        nargs=2,
        type=float,
        metavar=("SLOPE", "INTERCEPT"),
        help="QCT phantom calibration: vBMD = SLOPE * HU + INTERCEPT (mg/cm3); default phantomless",
    )
    parser.add_argument("--lesions", type=Path, help="lytic lesion label map (non-zero = lytic)")
    parser.add_argument("--fix-sides", action="store_true", help="exchange left/right muscle labels when swapped")
    parser.add_argument(
        "--base-model",
        type=Path,
        help="personalise and solve this .osim (e.g. a Christophy/Bruno lumbar or thoracolumbar model) instead of "
        "building one; names are mapped by spinekit.biomech.base_model.DEFAULT_NAME_MAP",
    )
    parser.add_argument(
        "--name-map",
        type=Path,
        help="JSON overriding entries of the base-model name map: "
        '{"bodies": {"L5": "lumbar5", "thorax": "torso", ...}, "joints": {"L4/L5": "L4_L5_IVDjnt", ...}, '
        '"coordinates": {"lumbar_flexion": ["flex_extension", -1], ...}}',
    )
    parser.add_argument("--subject", default="", help="subject identifier written into the tables")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def biomech_files(
    spine_path: Path,
    out: Path,
    sex: str,
    age: float,
    height_cm: float,
    weight_kg: float,
    muscles_path: Path | None = None,
    image_path: Path | None = None,
    modality: str = "CT",
    tasks: list[str] | None = None,
    phantom_calibration: tuple[float, float] | None = None,
    fix_sides: bool = False,
    subject: str = "",
    progress=None,
    lesions_path: Path | None = None,
    base_model: Path | None = None,
    name_map_path: Path | None = None,
) -> list[Path]:
    """Read the label maps, run the stage and write its files; returns their paths."""
    from spinekit.biomech import strength as S
    from spinekit.biomech.anatomy import anatomy_from_labels
    from spinekit.biomech.figure import risk_figure
    from spinekit.biomech.pipeline import internal_calibration, run_biomech
    from spinekit.biomech.tasks import DEFAULT_TASKS, parse_task
    from spinekit.io import atomic_path, read_labels, read_volume, resample_labels_to
    from spinekit.tables import write_table

    image = read_volume(image_path) if image_path else None
    spine = read_labels(spine_path)
    muscles = read_labels(muscles_path) if muscles_path else None
    lesions = read_labels(lesions_path) if lesions_path else None
    if image is not None and not image.same_grid(spine):
        spine = resample_labels_to(spine, image)
    if muscles is not None and not muscles.same_grid(spine):
        muscles = resample_labels_to(muscles, spine)
    anatomy = anatomy_from_labels(
        spine,
        muscles,
        image,
        sex,
        age,
        height_cm,
        weight_kg,
        modality=modality,
        on_swap="swap" if fix_sides else "error",
        subject=subject,
        lesions=lesions,
    )
    calibration = None
    if modality == "CT" and image is not None:
        if phantom_calibration is not None:
            calibration = S.phantom_calibration(*phantom_calibration)
        elif muscles is not None:
            calibration = internal_calibration(image, muscles)
    task_list = [parse_task(t) for t in (tasks or DEFAULT_TASKS)]
    name_map = None
    if base_model is not None:
        from spinekit.biomech.base_model import read_name_map

        name_map = read_name_map(name_map_path)
    result = run_biomech(anatomy, task_list, calibration, progress, base_model, name_map)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    osim_path = out / "model.osim"
    tmp = atomic_path(osim_path)
    try:
        result.built.model.printToXML(str(tmp))
        os.replace(tmp, osim_path)
    finally:
        tmp.unlink(missing_ok=True)
    written.append(osim_path)
    written.append(write_table(result.loads, out / "loads.csv"))
    written.append(write_table(result.strength, out / "strength.csv"))
    written.append(write_table(result.risk, out / "risk.csv"))
    flags_path = out / "flags.txt"
    lines = list(result.flags) + [
        f"task {r.task.name}: {'converged' if r.converged else 'NOT converged'}; "
        f"max reserve {r.max_reserve_nm:.2f} N m; max activation {r.max_activation:.2f}"
        + ("; " + "; ".join(r.notes) if r.notes else "")
        for r in result.results
    ]
    tmp = atomic_path(flags_path)
    try:
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, flags_path)
    finally:
        tmp.unlink(missing_ok=True)
    written.append(flags_path)
    written.append(risk_figure(result.risk, out / "risk.png", title=f"Factor of risk {subject}".strip()))
    return written


def run(args: argparse.Namespace) -> int:
    from spinekit.progress import tqdm_progress

    with tqdm_progress("biomech") as progress:
        written = biomech_files(
            args.spine,
            args.out,
            args.sex,
            args.age,
            args.height_cm,
            args.weight_kg,
            args.muscles,
            args.image,
            args.modality,
            args.tasks,
            tuple(args.phantom_calibration) if args.phantom_calibration else None,
            args.fix_sides,
            args.subject,
            progress,
            args.lesions,
            args.base_model,
            args.name_map,
        )
    for path in written:
        print(path)
    return 0


def demo(workdir: Path, phantom_dir: Path) -> list[Path]:
    """Run the stage on the demo phantom (male, 60 y, 175 cm, 75 kg) into ``workdir/biomech``."""
    muscles = phantom_dir / "muscles.nii.gz"
    return biomech_files(
        phantom_dir / "spine.nii.gz",
        Path(workdir) / "biomech",
        "male",
        60.0,
        175.0,
        75.0,
        muscles_path=muscles if muscles.exists() else None,
        image_path=phantom_dir / "image.nii.gz",
        subject="phantom",
    )
