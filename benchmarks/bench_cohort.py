"""Cohort throughput: the same phantom subjects on 1 and on 2 Dask workers, in one run; prints the ratio.

    .venv/bin/python benchmarks/bench_cohort.py [--subjects 50] [--stages measure,biomech] [--workdir DIR]

Target (issue "Cohorts"): 2 workers process subjects at >= 1.7x the rate of 1 worker. Throughput is subjects per
second of processing, measured after the workers have started and imported the stages' modules (cluster start-up
is a constant cost, not throughput). Subjects are phantoms from ``spinekit.phantom`` (2 mm, L1-S1) with their
label maps given in the manifest; when the phantom generator or a stage is not importable the benchmark falls
back to box-vertebra subjects and the ``volumes`` stage, and says so. The ratio is bounded by the free cores:
run it on a machine with at least two idle cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_phantom_subjects(folder: Path, n: int) -> tuple[Path, str]:
    """``n`` phantom subjects (distinct seeds); returns the manifest and what generated them."""
    rows = ["subject_id,image,spine,muscles,sex,age,height_cm,weight_kg"]
    try:
        from spinekit.phantom import PhantomConfig, make_phantom
    except ImportError as exc:
        print(f"spinekit.phantom not importable ({exc}): using box-vertebra subjects", flush=True)
        return write_box_subjects(folder, n), "boxes"
    for s in range(n):
        sex = ("male", "female")[s % 2]
        phantom = make_phantom(
            PhantomConfig(seed=s, spacing=(2.0, 2.0, 2.0), levels="L1-S1", sex=sex, variability=0.03)
        )
        files = phantom.write(folder / f"p{s:03d}")
        image, spine, muscles = files["image"], files["spine"], files["muscles"]
        rows.append(f"p{s:03d},{image},{spine},{muscles},{sex[0].upper()},{40 + s % 40},{170 + s % 20},{70 + s % 25}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, "phantom"


def write_box_subjects(folder: Path, n: int) -> Path:
    from spinekit.io import Volume, write_labels, write_volume

    rows = ["subject_id,image,spine,sex,age"]
    for s in range(n):
        rng = np.random.default_rng(s)
        image = rng.normal(40.0, 10.0, (96, 80, 80)).astype(np.float32)
        labels = np.zeros(image.shape, np.uint8)
        for k, label in enumerate(range(20, 27)):
            labels[4 + 13 * k : 13 + 13 * k, 25:55, 28:52] = label
        image[labels > 0] += 400.0
        volume = Volume(image, (2.0, 2.0, 2.0))
        (folder / f"b{s:03d}").mkdir(parents=True, exist_ok=True)
        write_volume(volume, folder / f"b{s:03d}" / "image.nii.gz")
        write_labels(volume.with_array(labels), folder / f"b{s:03d}" / "spine.nii.gz")
        rows.append(f"b{s:03d},b{s:03d}/image.nii.gz,b{s:03d}/spine.nii.gz,{'FM'[s % 2]},{50 + s % 30}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def usable_stages(manifest: Path, stages: list[str], scratch: Path) -> list[str]:
    """The requested stages that run on the first subject in this process; the rest are reported and dropped."""
    from spinekit.cohort.api import run_cohort

    result = run_cohort(manifest, scratch, stages, workers=0, qc=False, report=False)
    first = result.manifest.subjects["subject_id"].iloc[0]
    failed = result.failures[result.failures["subject"] == first]
    for row in failed.itertuples():
        print(f"stage {row.stage} unusable here: {row.reason}", flush=True)
    return [s for s in stages if s not in set(failed["stage"])]


def time_run(manifest: Path, out: Path, stages: list[str], workers: int) -> tuple[float, int]:
    """Processing seconds and subjects done on a fresh LocalCluster of ``workers`` processes."""
    from spinekit.cohort.api import STAGE_MODULES
    from spinekit.cohort.manifest import read_manifest
    from spinekit.cohort.runner import run_stages, start_client

    rows = read_manifest(manifest).rows()
    client, cluster = start_client(workers)
    try:
        modules = [STAGE_MODULES[s] for s in stages if s in STAGE_MODULES] + ["spinekit.cohort.stages", "SimpleITK"]
        client.run(__import__("spinekit.cohort.runner", fromlist=["_warm_up"])._warm_up, modules)
        summary = run_stages(rows, out, stages, client=client)
    finally:
        client.close()
        cluster.close()
    return summary.seconds, summary.count("done") // max(1, len(stages))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument("--stages", default="measure,biomech")
    parser.add_argument("--workdir", help="keep data and outputs here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("distributed").setLevel(logging.WARNING)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        manifest, source = write_phantom_subjects(work / "data", args.subjects)
        print(f"{args.subjects} {source} subjects written in {time.perf_counter() - start:.1f} s", flush=True)
        stages = usable_stages(manifest, [s for s in args.stages.split(",") if s], work / "probe")
        if not stages:
            print("no requested stage runs here: falling back to the 'volumes' stage", flush=True)
            stages = ["volumes"]
        print(f"stages: {','.join(stages)}; cores: {os.cpu_count()}", flush=True)
        seconds_1, done_1 = time_run(manifest, work / "out1", stages, 1)
        seconds_2, done_2 = time_run(manifest, work / "out2", stages, 2)
        rate_1, rate_2 = done_1 / seconds_1, done_2 / seconds_2
        print(f"1 worker : {done_1} subjects in {seconds_1:.1f} s = {rate_1:.2f} subjects/s")
        print(f"2 workers: {done_2} subjects in {seconds_2:.1f} s = {rate_2:.2f} subjects/s")
        ratio = rate_2 / rate_1
        print(f"throughput ratio 2/1 workers: {ratio:.2f} (target >= 1.7): {'PASS' if ratio >= 1.7 else 'FAIL'}")
        return 0 if ratio >= 1.7 and done_1 == done_2 == args.subjects else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
