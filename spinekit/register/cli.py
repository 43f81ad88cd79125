"""``spinekit register``: register a follow-up scan to its baseline vertebra by vertebra and tabulate the change.

Writes into ``--out``:

* ``<level>_followup_to_baseline.tfm``: one ITK rigid transform per level. ITK convention: it maps baseline LPS
  points to follow-up LPS points, i.e. it is the transform that resamples the follow-up into the baseline frame
  (``sitk.Resample(followup, baseline, transform)``); Slicer applies it to the follow-up to overlay the baseline.
* ``changes.csv``: tidy table (registration diagnostics, volume, heights, Genant grade, intensity, lesion change;
  skipped levels with their reason; flagged registrations with NaN change and the flags as reason);
* ``followup_in_baseline_<level>.nii.gz``: the follow-up image (or its labels) resampled into the baseline frame
  on a box around that vertebra;
* with ``--change-maps``: ``change_jacobian_<level>.nii.gz`` (Jacobian determinant of the deformable B-spline
  stage, < 1 where bone was lost) and ``change_difference_<level>.nii.gz`` (follow-up minus baseline intensity after
  alignment; same modality only), on the baseline crop of each level, plus their rows in ``changes.csv``;
* ``README.txt``: the transform convention.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from spinekit.errors import InputError
from spinekit.io import Volume, atomic_path, read_labels, read_volume, write_volume
from spinekit.labels import VERTEBRA_NAMES, parse_level_range
from spinekit.register.geometry import crop_to_label
from spinekit.register.pipeline import SpineRegistration, register_spines, vertebra_levels
from spinekit.tables import write_table

log = logging.getLogger(__name__)

CONVENTION = (
    "Each <level>_followup_to_baseline.tfm is an ITK rigid transform (Euler3D) that maps a point of the BASELINE "
    "scan (LPS mm) to the same point of the FOLLOW-UP scan (LPS mm): the ITK/SimpleITK resampling convention, so "
    "sitk.Resample(followup, baseline, transform) brings the follow-up into the baseline frame, and Slicer, which "
    "reads ITK files with this convention, moves the follow-up onto the baseline when the transform is applied to it.\n"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", type=Path, required=True, help="baseline image (NIfTI/NRRD/MHA/DICOM folder)")
    parser.add_argument("--baseline-spine", type=Path, required=True, help="baseline vertebra label map (VerSe)")
    parser.add_argument("--followup", type=Path, required=True, help="follow-up image")
    parser.add_argument(
        "--followup-spine", type=Path, help="follow-up vertebra label map (default: segment the follow-up)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--levels", help="restrict to a level range, e.g. T12-L5")
    parser.add_argument("--baseline-lesions", type=Path, help="baseline lesion label map (optional)")
    parser.add_argument("--followup-lesions", type=Path, help="follow-up lesion label map (optional)")
    parser.add_argument(
        "--modalities",
        default="auto",
        help="baseline,follow-up modalities (ct/mr), e.g. 'ct,mr'; 'auto' guesses from intensities",
    )
    parser.add_argument("--subject", default="", help="subject id written into the table")
    parser.add_argument(
        "--change-maps",
        action="store_true",
        help="also fit a deformable (B-spline) stage per vertebra and write Jacobian and intensity-difference maps",
    )


def guess_modality(image: Volume) -> str:
    """ "ct" when the image holds values below -50 (fat is about -100 HU, air -1000 HU), else "mr".

    MR magnitude images are non-negative; a CT cropped to the spine (no air) still has fat below -50 HU
    (Hounsfield unit ranges: Kalender 2011, Computed Tomography, 3rd ed., Table 1.1).
    """
    return "ct" if float(np.percentile(image.array, 1)) < -50 else "mr"


def run_register(
    baseline: Path,
    baseline_spine: Path,
    followup: Path,
    out: Path,
    followup_spine: Path | None = None,
    levels: list[int] | None = None,
    baseline_lesions: Path | None = None,
    followup_lesions: Path | None = None,
    modalities: tuple[str, str] | None = None,
    subject: str = "",
    progress=None,
    change_maps: bool = False,
) -> list[Path]:
    """Read the inputs, register, and write transforms, table and resampled follow-ups; returns the written paths."""
    base_image = read_volume(baseline)
    base_spine = read_labels(baseline_spine, base_image)
    follow_image = read_volume(followup)
    if followup_spine is not None:
        follow_spine = read_labels(followup_spine, follow_image)
    else:
        follow_spine = _segment(follow_image)
    modalities = modalities or (guess_modality(base_image), guess_modality(follow_image))
    reason = ""
    if modalities[0] != modalities[1]:
        reason = (
            f"different modalities ({modalities[0]} baseline, {modalities[1]} follow-up): intensities not comparable"
        )
    result = register_spines(
        base_spine,
        follow_spine,
        baseline_image=base_image,
        followup_image=follow_image,
        baseline_lesions=read_labels(baseline_lesions) if baseline_lesions else None,
        followup_lesions=read_labels(followup_lesions) if followup_lesions else None,
        levels=levels,
        intensity_reason=reason,
        subject=subject,
        change_maps=change_maps,
        progress=progress,
    )
    return write_outputs(result, base_spine, follow_image, Path(out))


def _segment(image: Volume) -> Volume:
    try:
        from spinekit.segment.api import segment_image
    except ImportError as exc:
        raise InputError(
            f"no --followup-spine was given and the segmentation stage is unavailable ({exc}); "
            "pass --followup-spine or install spinekit[seg]"
        ) from None
    result = segment_image(image, targets=("spine",))
    if result.spine is None or not vertebra_levels(result.spine):
        raise InputError("segmenting the follow-up found no vertebra; check the image or pass --followup-spine")
    return result.spine


def write_outputs(result: SpineRegistration, baseline_spine: Volume, followup_image: Volume, out: Path) -> list[Path]:
    """Transforms, changes.csv, per-level follow-up in the baseline frame and the convention README."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for label, registration in result.registrations.items():
        name = VERTEBRA_NAMES.get(label, str(label))
        path = out / f"{name}_followup_to_baseline.tfm"
        tmp = atomic_path(path)
        try:
            sitk.WriteTransform(registration.transform, str(tmp))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(path)
        box = crop_to_label(baseline_spine.to_sitk() == label, margin_mm=10.0)
        resampled = sitk.Resample(
            followup_image.to_sitk(), box, registration.transform, sitk.sitkLinear, float(followup_image.array.min())
        )
        written.append(write_volume(Volume.from_sitk(resampled), out / f"followup_in_baseline_{name}.nii.gz"))
        maps = result.change_maps.get(label)
        if maps is not None and maps.jacobian is not None:
            written.append(write_volume(maps.jacobian, out / f"change_jacobian_{name}.nii.gz"))
        if maps is not None and maps.difference is not None:
            written.append(write_volume(maps.difference, out / f"change_difference_{name}.nii.gz"))
    written.append(write_table(result.table, out / "changes.csv"))
    readme = out / "README.txt"
    tmp = atomic_path(readme)
    tmp.write_text(CONVENTION)
    tmp.replace(readme)
    written.append(readme)
    return written


def run(args: argparse.Namespace) -> int:
    from spinekit.progress import tqdm_progress

    levels = parse_level_range(args.levels) if args.levels else None
    modalities = None
    if args.modalities != "auto":
        parts = [p.strip().lower() for p in args.modalities.split(",")]
        if len(parts) != 2 or any(p not in ("ct", "mr") for p in parts):
            raise InputError(f"--modalities must look like 'ct,mr', not {args.modalities!r}")
        modalities = (parts[0], parts[1])
    with tqdm_progress("register") as progress:
        written = run_register(
            args.baseline, args.baseline_spine, args.followup, args.out, args.followup_spine, levels,
            args.baseline_lesions, args.followup_lesions, modalities, args.subject, progress, args.change_maps,
        )  # fmt: skip
    for path in written:
        print(path)
    return 0


def demo(workdir: Path, phantom_dir: Path) -> list[Path]:
    """Register the demo phantom pair (``phantom_dir`` and ``phantom_dir/followup``) into ``workdir/register``."""
    phantom_dir = Path(phantom_dir)
    follow = phantom_dir / "followup"
    lesions = (phantom_dir / "lesions.nii.gz", follow / "lesions.nii.gz")
    have_lesions = all(p.exists() for p in lesions)
    return run_register(
        phantom_dir / "image.nii.gz",
        phantom_dir / "spine.nii.gz",
        follow / "image.nii.gz",
        Path(workdir) / "register",
        followup_spine=follow / "spine.nii.gz",
        baseline_lesions=lesions[0] if have_lesions else None,
        followup_lesions=lesions[1] if have_lesions else None,
        subject="phantom",
        change_maps=True,
    )
