"""Interactive correction benchmark: Dice after 1..10 simulated clicks, NoC@85/NoC@90 and click latency.

Protocol (Xu et al. 2016; Sofiiuk et al. 2022; :mod:`spinekit.segment.clicks`): each click goes to the centre of the
largest error region, positive on a miss, negative on an excess. Cases: phantom masks broken on purpose (a vertebra
with a slab or its posterior elements removed, a vertebra leaking into its disc, a muscle shifted or eroded) and the
real ct_lumbar_3mm CT with its TotalSegmentator labels (silver standard) broken the same way.

Baseline measured in the same run: a 5 mm "brush" (each click paints or erases a 5 mm ball, never over another
label), the manual tool a reader would otherwise use. Ratios < 1 mean fewer clicks than the brush.

Run: ``python benchmarks/bench_interactive.py [--spacing 1.0] [--clicks 10] [--model-dir DIR]``. Uses one torch thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from spinekit.io import Volume
from spinekit.segment import clicks as ck
from spinekit.segment.interactive import InteractiveSession

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BRUSH_MM = 5.0


class BrushSession:
    """Baseline: a click paints (positive) or erases (negative) a ball of ``BRUSH_MM`` around itself."""

    def __init__(self, image: Volume, labels: Volume):
        self.image = image
        self._labels = labels.array.copy()

    @property
    def labels(self) -> Volume:
        return self.image.with_array(self._labels)

    def add_click(self, point_lps, structure: int, positive: bool = True):
        start = time.perf_counter()
        ijk = self.image.lps_to_index(np.asarray(point_lps, float))
        sp = np.asarray(self.image.spacing)
        lo = np.maximum(np.floor(ijk - BRUSH_MM / sp).astype(int), 0)[::-1]
        hi = np.minimum(np.ceil(ijk + BRUSH_MM / sp).astype(int) + 1, self.image.shape_ijk)[::-1]
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        k, j, i = np.indices(tuple(hi - lo)) + lo[:, None, None, None]
        ball = ((i - ijk[0]) * sp[0]) ** 2 + ((j - ijk[1]) * sp[1]) ** 2 + ((k - ijk[2]) * sp[2]) ** 2 <= BRUSH_MM**2
        view = self._labels[box]
        if positive:
            view[ball & (view == 0)] = structure
        else:
            view[ball & (view == structure)] = 0
        return _Result(ck.Click(tuple(point_lps), structure, positive), time.perf_counter() - start)


class _Result:
    def __init__(self, click, seconds):
        self.click, self.seconds = click, seconds


def phantom_cases(spacing: float):
    from spinekit.phantom import PhantomConfig, make_phantom

    phantom = make_phantom(PhantomConfig(levels="L2-L4", spacing=(spacing,) * 3, seed=11))
    spine, muscles = phantom.spine, phantom.muscles
    l3 = spine.array == 22
    centre = spine.index_to_lps(np.argwhere(l3)[:, ::-1].astype(float)).mean(axis=0)
    yield (
        "phantom L3 15 mm sagittal slab",
        phantom.image,
        ck.break_remove_slab(spine, 22, (1, 0, 0), 15),
        "spine",
        22,
        l3,
    )
    yield "phantom L3 12 mm axial slab", phantom.image, ck.break_remove_slab(spine, 22, (0, 0, 1), 12), "spine", 22, l3
    posterior = ck.break_remove_slab(spine, 22, (0, 1, 0), 30, offset_mm=25)
    yield "phantom L3 posterior elements", phantom.image, posterior, "spine", 22, l3
    leak = ck.break_leak(spine, 22, centre + np.array([0, -8, -20]), 10, overwrite=(122,))
    yield "phantom L3 leak into disc", phantom.image, leak, "spine", 22, l3
    es = muscles.array == 7
    yield "phantom ES-L shifted 6 mm", phantom.image, ck.break_shift(muscles, 7, (6, 0, 0)), "muscles", 7, es
    mf = muscles.array == 5
    yield "phantom MF-L eroded 3 mm", phantom.image, ck.break_shift(muscles, 5, (0, 0, 0), 3), "muscles", 5, mf


def real_ct():
    """The ct_lumbar_3mm scan with its TotalSegmentator labels in our numbering (None when the data is absent).

    Labels go through :func:`spinekit.label_import.convert_labels` (TotalSegmentator v2 27 L5 -> 24 ... 31 L1 -> 20,
    iliopsoas 88/89 -> psoas 1/2, autochthon 86/87 -> 9/10).
    """
    from spinekit.io import read_labels, read_volume
    from spinekit.label_import import convert_labels

    folder = DATA / "ct_lumbar_3mm"
    if not folder.is_dir():
        return None
    image = read_volume(folder / "ct.nii.gz")
    converted = convert_labels(read_labels(folder / "totalseg_total_fast.nii.gz", image), "totalsegmentator")
    return image, converted.spine, converted.muscles


def real_cases():
    loaded = real_ct()
    if loaded is None:
        print(f"[skip] {DATA / 'ct_lumbar_3mm'} is absent: real-scan cases not run", file=sys.stderr)
        return
    image, spine, muscles = loaded
    l3 = spine.array == 22
    centre = spine.index_to_lps(np.argwhere(l3)[:, ::-1].astype(float)).mean(axis=0)
    yield "CT L3 15 mm sagittal slab", image, ck.break_remove_slab(spine, 22, (1, 0, 0), 15), "spine", 22, l3
    l4 = spine.array == 23
    yield "CT L4 12 mm axial slab", image, ck.break_remove_slab(spine, 23, (0, 0, 1), 12), "spine", 23, l4
    posterior = ck.break_remove_slab(spine, 22, (0, 1, 0), 30, offset_mm=25)
    yield "CT L3 posterior elements", image, posterior, "spine", 22, l3
    yield "CT L3 leak (anterior)", image, ck.break_leak(spine, 22, centre + np.array([0, -38, 0]), 10), "spine", 22, l3
    psoas = muscles.array == 1
    yield "CT psoas-L shifted 6 mm", image, ck.break_shift(muscles, 1, (6, 0, 0)), "muscles", 1, psoas
    autochthon = muscles.array == 9
    yield "CT autochthon-L eroded 3 mm", image, ck.break_shift(muscles, 9, (0, 0, 0), 3), "muscles", 9, autochthon


def run_case(session, structure, truth, n_clicks):
    before = session.labels.array.copy()
    curve = ck.run_simulated_clicks(session, structure, truth, n_clicks)
    after = session.labels.array
    other = (before != structure) & (after != structure)
    assert np.array_equal(before[other], after[other]), "a click changed another structure"
    return curve


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=1.0, help="phantom voxel size (mm)")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--model-dir", type=Path, default=None, help="folder with spine.pt/muscles.pt (optional)")
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = list(phantom_cases(args.spacing)) + ([] if args.no_real else list(real_cases()))
    models = {}
    for task in ("spine", "muscles"):
        try:
            from spinekit.segment.networks import load_model

            network, config, meta = load_model(task, args.model_dir)
            models[task] = ((network, config), meta.get("version", "?"))
        except Exception as exc:  # no trained model installed: the network rows are skipped
            print(f"[info] no {task} model ({type(exc).__name__}); network rows skipped", file=sys.stderr)
    header = f"{'case':32s} {'method':9s} {'D0':>5s} " + " ".join(f"D{n:<4d}" for n in range(1, args.clicks + 1))
    print(header + f" {'NoC85':>5s} {'NoC90':>5s} {'med ms':>7s} {'p90 ms':>7s}")
    latencies: dict[str, list[float]] = {"clicks": [], "brush": [], "network": []}
    ratios = []
    for name, image, broken, task, structure, truth in cases:
        rows = {"clicks": InteractiveSession(image, broken, task), "brush": BrushSession(image, broken)}
        if task in models:
            rows["network"] = InteractiveSession(image, broken, task, model=models[task][0])
        curves = {}
        for method, session in rows.items():
            curve = run_case(session, structure, truth, args.clicks)
            curves[method] = curve
            latencies[method] += curve.seconds
            ms = np.array(curve.seconds) * 1000 if curve.seconds else np.array([np.nan])
            dices = " ".join(f"{d:.3f}" for d in curve.dices)
            print(f"{name:32s} {method:9s} {curve.initial_dice:.3f} {dices} {curve.noc(0.85):5d} {curve.noc(0.90):5d} "
                  f"{np.median(ms):7.1f} {np.percentile(ms, 90):7.1f}")  # fmt: skip
        ratios.append(curves["clicks"].noc(0.90) / max(curves["brush"].noc(0.90), 1))
    print()
    for method, values in latencies.items():
        if values:
            ms = np.array(values) * 1000
            print(f"latency {method:8s}: median {np.median(ms):6.1f} ms, p90 {np.percentile(ms, 90):6.1f} ms, "
                  f"max {ms.max():6.1f} ms over {len(ms)} clicks (1 torch thread)")  # fmt: skip
    print(f"NoC@90 ratio clicks / brush baseline: median {np.median(ratios):.2f} over {len(ratios)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
