"""Time `measure_subject` on a T12-S1 phantom at 1 mm, against reading its label maps from disk.

Run: ``python benchmarks/bench_morphometry.py`` (asserts under 5 s on 2 cores; prints the time, the ratio to
the baseline measured in the same run, and the slowest stages). The limit is the issue's acceptance criterion.
Uses ``spinekit.phantom.make_phantom`` when available, otherwise the analytic shapes of the tests.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

LIMIT_S = 5.0


def _phantom():
    try:
        from spinekit.phantom import PhantomConfig, make_phantom

        phantom = make_phantom(PhantomConfig())
        return phantom.spine, phantom.image, phantom.muscles, "spinekit.phantom (default config)"
    except (ImportError, TypeError, AttributeError):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
        from test_morphometry_shapes import add_muscles, straight_spine

        shapes = straight_spine(labels=(19, 20, 21, 22, 23, 24, 26), spacing=1.0, width_mm=170.0)
        radii = {1: (12.0, 10.0, -38.0), 2: (12.0, 10.0, 38.0), 7: (10.0, 14.0, -30.0), 8: (10.0, 14.0, 30.0)}
        return shapes.spine, None, add_muscles(shapes, radii), "analytic T12-S1 shapes, 1 mm"


def main() -> int:
    import torch

    torch.set_num_threads(1)
    from spinekit.io import read_labels, write_labels
    from spinekit.morphometry.measure import measure_subject

    spine, image, muscles, source = _phantom()
    with tempfile.TemporaryDirectory() as tmp:
        write_labels(spine, Path(tmp) / "spine.nii.gz")
        write_labels(muscles, Path(tmp) / "muscles.nii.gz")
        start = time.perf_counter()
        read_labels(Path(tmp) / "spine.nii.gz")
        read_labels(Path(tmp) / "muscles.nii.gz")
        baseline = time.perf_counter() - start
    stages: list[tuple[float, str]] = []
    start = time.perf_counter()
    table = measure_subject(
        spine,
        image=image,
        muscles=muscles,
        subject="bench",
        progress=lambda _f, m: stages.append((time.perf_counter(), m)),
    )
    elapsed = time.perf_counter() - start
    previous = start
    for (when, _), (_, name) in zip(stages[1:], stages[:-1], strict=True):
        print(f"  {name:<20s} {when - previous:6.2f} s")
        previous = when
    print(f"phantom: {source}, grid {spine.shape_ijk}, {len(table)} rows")
    print(f"baseline (read spine + muscle maps): {baseline:.3f} s")
    print(f"measure_subject: {elapsed:.3f} s  ({elapsed / baseline:.1f}x baseline), limit {LIMIT_S:.0f} s")
    assert elapsed < LIMIT_S, f"measure_subject took {elapsed:.2f} s (limit {LIMIT_S} s)"
    _compare_with_spine_report()
    return 0


#: TotalSegmentator's reference spine report for ct_lumbar_3mm (wasserth/TotalSegmentator @0e65a448,
#: tests/reference_files/spine_report/example_ct_report/spine_report.json): (posterior, middle, anterior) mm.
TS_REFERENCE_MM = {20: (27.0, 24.0, 21.0), 21: (25.5, 24.0, 28.5), 22: (24.0, 22.5, 28.5), 23: (22.5, 22.5, 28.5),
                   24: (22.5, 25.5, 28.5)}  # fmt: skip


def _compare_with_spine_report() -> None:
    """Per level: our endplate-plane heights and our spine-report re-implementation against TS's own numbers."""
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct_lumbar_3mm"
    if not data.exists():
        print("(../shared/data absent: spine-report comparison skipped)")
        return
    import numpy as np

    from spinekit.io import read_labels
    from spinekit.morphometry.context import build_spine_model
    from spinekit.morphometry.spine_report import spine_report_heights

    bodies = read_labels(data / "totalseg_vertebrae_pp_refined.nii.gz")
    start = time.perf_counter()
    report = spine_report_heights(bodies)
    report_s = time.perf_counter() - start
    model = build_spine_model(bodies)
    print(f"ct_lumbar_3mm bodies (TS pp_refined): spine-report re-implementation {report_s:.3f} s")
    print(f"{'level':6s}{'position':>10s}{'TS json':>9s}{'ours(TS)':>9s}{'ours 3D':>9s}{'3D-TS':>8s}")
    diffs = []
    for v, reference in TS_REFERENCE_MM.items():
        for position, theirs in zip(("posterior", "middle", "anterior"), reference, strict=True):
            mine = report[v].heights[position]
            ours = model.heights[v].heights[position]
            diffs.append(ours - theirs)
            print(f"{model.frames[v].name:6s}{position:>10s}{theirs:9.2f}{mine:9.2f}{ours:9.2f}{ours - theirs:+8.2f}")
    print(
        f"3D endplate-plane minus spine report: mean {np.mean(diffs):+.2f} mm, max |diff| {np.abs(diffs).max():.2f} mm"
    )


if __name__ == "__main__":
    sys.exit(main())
