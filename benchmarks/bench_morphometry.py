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
    return 0


if __name__ == "__main__":
    sys.exit(main())
