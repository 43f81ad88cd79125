"""Headless Slicer batch run of the SpineBiomech cohort pipeline (and its self-test).

Run it with the Slicer application, no window::

    Slicer --no-splash --no-main-window --python-script Testing/Slicer/batch_cohort.py MANIFEST.csv --out DIR \\
        [--stages segment,measure,register,biomech] [--workers N]
    Slicer --no-splash --no-main-window --python-script Testing/Slicer/batch_cohort.py --self-test

or the same pipeline with Slicer's Python but without the application::

    PythonSlicer -m spinekit cohort MANIFEST.csv --out DIR --workers 4

What it does: the cohort itself runs OUT of the Slicer process, as ``PythonSlicer -m spinekit cohort ...``
(Dask's worker processes are spawned with ``sys.executable``, which inside Slicer is the application, not a
Python interpreter; a child process also keeps the application responsive). Then, inside Slicer, it loads the
first completed subject's image and label map into the MRML scene with ``slicer.util`` and the cohort table as a
table node, checks them, and exits with 0 (success) or 1 via ``slicer.util.exit``. ``--self-test`` writes a
small synthetic cohort (five box-vertebra subjects and one corrupted file) into a temporary folder first.

Outside Slicer (``python Testing/Slicer/batch_cohort.py --self-test``) the same script runs with this Python and
skips the scene checks, which is how the pytest suite exercises it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def in_slicer() -> bool:
    try:
        import slicer

        return hasattr(slicer, "app") and slicer.app is not None
    except ImportError:
        return False


def python_for_spinekit() -> str:
    """The interpreter that runs ``-m spinekit``: PythonSlicer inside Slicer, else this Python."""
    if in_slicer():
        found = shutil.which("PythonSlicer")
        if found:
            return found
        import slicer

        candidate = Path(slicer.app.applicationDirPath()) / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
        if candidate.exists():
            return str(candidate)
        raise RuntimeError("PythonSlicer not found next to the Slicer executable")
    return sys.executable


def write_self_test_cohort(folder: Path) -> Path:
    """Five subjects with box vertebrae L1-L5 (known volumes) and one corrupted image."""
    import numpy as np

    from spinekit.io import Volume, write_labels, write_volume

    rows = ["subject_id,image,spine,sex,age"]
    for s in range(5):
        rng = np.random.default_rng(s)
        image = rng.normal(40.0, 10.0, (50, 32, 32)).astype(np.float32)
        labels = np.zeros(image.shape, np.uint8)
        for n, label in enumerate(range(20, 25)):
            labels[3 + 9 * n : 9 + 9 * n, 10:22, 10:22] = label
        image[labels > 0] += 400.0
        volume = Volume(image, (2.0, 2.0, 2.0))
        (folder / f"s{s}").mkdir(parents=True, exist_ok=True)
        write_volume(volume, folder / f"s{s}" / "image.nii.gz")
        write_labels(volume.with_array(labels), folder / f"s{s}" / "spine.nii.gz")
        rows.append(f"s{s},s{s}/image.nii.gz,s{s}/spine.nii.gz,{'FM'[s % 2]},{50 + s}")
    (folder / "broken.nii.gz").write_bytes(os.urandom(2048))
    rows.append("broken,broken.nii.gz,,F,70")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def run_cohort_process(manifest: Path, out: Path, stages: str, workers: int) -> int:
    command = [python_for_spinekit(), "-m", "spinekit", "cohort", str(manifest), "--out", str(out),
               "--stages", stages, "--workers", str(workers), "--no-progress"]  # fmt: skip
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, check=False).returncode


def check_outputs(out: Path, self_test: bool) -> list[str]:
    """Problems with the cohort's outputs (empty list = fine); loads one subject into the scene in Slicer."""
    import pandas as pd

    problems = []
    for name in ("failures.csv", "cohort_metrics.parquet", "cohort_metrics.csv", "report.html"):
        if not (out / name).exists():
            problems.append(f"{name} missing")
    if problems:
        return problems
    metrics = pd.read_parquet(out / "cohort_metrics.parquet")
    failures = pd.read_csv(out / "failures.csv", keep_default_na=False)
    if self_test:
        if sorted(metrics["subject"].astype(str).unique()) != [f"s{s}" for s in range(5)]:
            problems.append(f"subjects measured: {sorted(metrics['subject'].unique())}")
        expected = 6 * 12 * 12 * 8.0  # 6 slices x 12 x 12 voxels of 2 mm
        if not ((metrics["metric"] == "volume") & ((metrics["value"] - expected).abs() < 1e-6)).any():
            problems.append("box vertebra volumes differ from the known 6912 mm3")
        if list(failures["subject"]) != ["broken"]:
            problems.append(f"failures.csv lists {list(failures['subject'])}, expected ['broken']")
    if in_slicer():
        problems += check_in_scene(out, metrics)
    return problems


def check_in_scene(out: Path, metrics) -> list[str]:
    """Load the first subject's image and labels and the cohort table into Slicer's scene."""
    import slicer

    subject = str(metrics["subject"].iloc[0])
    spine = next((out / "subjects" / subject).rglob("*.nii.gz"), None)
    problems = []
    table = slicer.util.loadTable(str(out / "cohort_metrics.csv"))
    if table is None or table.GetNumberOfRows() != len(metrics):
        problems.append("cohort_metrics.csv did not load as a table with every row")
    if spine is not None:
        node = slicer.util.loadLabelVolume(str(spine))
        if node is None or node.GetImageData() is None:
            problems.append(f"{spine} did not load as a label volume")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", help="manifest CSV (omit with --self-test)")
    parser.add_argument("--out", help="output folder (default: a temporary folder)")
    parser.add_argument("--stages", default="segment,measure,register,biomech")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--self-test", action="store_true", help="run on a generated five-subject cohort")
    args = parser.parse_args([a for a in argv if a != "--"])
    temporary = None
    if args.self_test:
        temporary = tempfile.mkdtemp(prefix="spinekit_batch_")
        manifest = write_self_test_cohort(Path(temporary) / "data")
        stages = "volumes"
    elif args.manifest:
        manifest, stages = Path(args.manifest), args.stages
    else:
        parser.error("give a manifest or --self-test")
    out = Path(args.out) if args.out else Path(temporary or tempfile.mkdtemp(prefix="spinekit_batch_")) / "out"
    code = run_cohort_process(manifest, out, stages, args.workers)
    problems = check_outputs(out, args.self_test)
    for problem in problems:
        print("batch_cohort: FAILED:", problem, flush=True)
    if not problems:
        print(f"batch_cohort: OK (cohort exit code {code}, outputs in {out})", flush=True)
    if temporary and not problems:
        shutil.rmtree(temporary, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    if in_slicer():
        import slicer

        slicer.util.exit(exit_code)
    else:
        sys.exit(exit_code)
