"""Benchmark: build the generic model and solve every default task; must stay under 30 s on 2 cores.

Prints the total and its ratio to a baseline measured in the same run (building the model and solving standing only).
With ../shared/data present it also runs the Christophy skeleton as a base model and the subject-specific model of
ct_lumbar_3mm (TotalSegmentator muscles): L4/L5 compression, largest reserve and L5/S1 extension capacity per model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

from spinekit.biomech.anatomy import generic_anatomy  # noqa: E402
from spinekit.biomech.model import build_model  # noqa: E402
from spinekit.biomech.solve import solve_task  # noqa: E402
from spinekit.biomech.tasks import DEFAULT_TASKS, TASKS  # noqa: E402

LIMIT_S = 30.0


def main() -> int:
    anatomy = generic_anatomy("male", 175.0, 70.0)
    start = time.perf_counter()
    built = build_model(anatomy)
    solve_task(built, TASKS["standing"])
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    built = build_model(anatomy)
    results = [solve_task(built, TASKS[name]) for name in DEFAULT_TASKS]
    total = time.perf_counter() - start
    converged = sum(r.converged for r in results)
    print(f"build + solve {len(results)} default tasks: {total:.2f} s ({converged}/{len(results)} converged)")
    print(f"baseline (build + standing only): {baseline:.2f} s; ratio {total / baseline:.2f}")
    for r in results:
        print(
            f"  {r.task.name:18s} L4/L5 compression {r.compression('L4/L5'):7.0f} N  "
            f"max reserve {r.max_reserve_nm:.2f} N m"
        )
    skeleton = Path(__file__).resolve().parents[2] / "shared" / "data" / "opensim" / "passenger_model"
    skeleton = skeleton / "Christophy2012_axialRotationUpd_skeletonOnly.osim"
    if skeleton.exists():
        from spinekit.biomech.base_model import load_base_model

        start = time.perf_counter()
        base = load_base_model(skeleton, anatomy)
        base_results = [solve_task(base, TASKS[name]) for name in DEFAULT_TASKS]
        base_total = time.perf_counter() - start
        print(f"--base-model Christophy skeleton + our muscles: {base_total:.2f} s; ratio {base_total / total:.2f}")
        for r, ours in zip(base_results, results, strict=True):
            print(
                f"  {r.task.name:18s} L4/L5 {r.compression('L4/L5'):7.0f} N "
                f"(built-in {ours.compression('L4/L5'):7.0f} N)  {'converged' if r.converged else 'NOT converged'}"
            )
    ct = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_lumbar_3mm"
    if ct.exists():
        from spinekit.biomech.anatomy import anatomy_from_labels
        from spinekit.biomech.solve import moment_capacity
        from spinekit.io import read_labels, read_volume
        from spinekit.label_import import convert_labels

        start = time.perf_counter()
        converted = convert_labels(read_labels(ct / "totalseg_total_fast.nii.gz"), "totalsegmentator")
        image = read_volume(ct / "ct.nii.gz")
        subject = anatomy_from_labels(converted.spine, converted.muscles, image, "male", 55, 175, 80)
        ct_built = build_model(subject)
        ct_results = [solve_task(ct_built, TASKS[name]) for name in DEFAULT_TASKS]
        ct_total = time.perf_counter() - start
        print(f"ct_lumbar_3mm (male 80 kg, TotalSegmentator muscles): {ct_total:.2f} s; ratio {ct_total / total:.2f}")
        for label, model in (("generic 70 kg", built), ("ct_lumbar_3mm", ct_built)):
            extension, _ = moment_capacity(model, TASKS["standing"], "L5_S1_FE")
            print(f"  L5/S1 extension capacity, {label}: {extension:.0f} N m")
        for r in ct_results:
            print(
                f"  {r.task.name:18s} L4/L5 {r.compression('L4/L5'):7.0f} N  max reserve {r.max_reserve_nm:.2f} N m  "
                f"max activation {r.max_activation:.2f}  {'converged' if r.converged else 'NOT converged'}"
            )
    assert total <= LIMIT_S, f"{total:.1f} s exceeds {LIMIT_S} s"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
