"""Per-vertebra registration against a whole-spine intensity rigid registration, on a phantom pair with known truth.

Run: ``python benchmarks/bench_register.py [--spacing 1.5] [--seed 4]``.

The follow-up (``spinekit.phantom.make_followup``) moves the patient by one global rigid motion and every vertebra
by its own extra motion (up to ``--per-level-deg`` / ``--per-level-mm``), and wedges L1 by 30 %. Both methods run in
this process on the same pair:

* ours: :func:`spinekit.register.pipeline.register_spines` (label maps, one rigid transform per vertebra);
* baseline: one SimpleITK rigid registration of the whole CT (Mattes mutual information, Euler3D, centred
  geometric initialisation, three resolution levels), the usual intensity-based approach (e.g. elastix/ANTs rigid
  defaults), applied to every vertebra.

It prints, per level, the mean target registration error (TRE) over the baseline vertebra's surface for both, the
seconds per vertebra and the time ratio, and asserts: median ≤ 2 s per vertebra (on 2 CPU cores), our TRE ≤ 1 mm
on intact and ≤ 2 mm on the collapsed level, and the whole-spine registration off by > 2 mm on some level (it cannot
follow independent per-vertebra motion).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

LIMIT_S_PER_VERTEBRA = 2.0
TRE_INTACT_MM = 1.0
TRE_COLLAPSED_MM = 2.0
#: The whole-spine registration "fails" on a level when its TRE exceeds this.
FAIL_MM = 2.0


def whole_spine_rigid(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """One rigid transform for the whole scan: Mattes MI, Euler3D, 3 levels (baseline point -> follow-up point)."""
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.05, 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=200, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--per-level-deg", type=float, default=5.0)
    parser.add_argument("--per-level-mm", type=float, default=3.0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    from spinekit.labels import VERTEBRA_NAMES
    from spinekit.phantom import FollowupConfig, PhantomConfig, make_followup, make_phantom
    from spinekit.register.geometry import surface_points_lps, transform_points
    from spinekit.register.pipeline import register_spines, vertebra_levels

    spacing = (args.spacing,) * 3
    baseline = make_phantom(PhantomConfig(spacing=spacing, levels="T12-L5", seed=3))
    followup = make_followup(
        baseline,
        FollowupConfig(
            seed=args.seed,
            collapse={"L1": 0.3},
            collapse_type="wedge",
            per_level_rotation_deg=args.per_level_deg,
            per_level_translation_mm=args.per_level_mm,
        ),
    )
    motions = followup.truth["followup"]["motions"]
    levels = [v for v in vertebra_levels(baseline.spine) if VERTEBRA_NAMES[v] in motions]

    start = time.perf_counter()
    ours = register_spines(baseline.spine, followup.spine, levels=levels)
    ours_total = time.perf_counter() - start
    start = time.perf_counter()
    whole = whole_spine_rigid(baseline.image.to_sitk(), followup.image.to_sitk())
    whole_total = time.perf_counter() - start

    print(f"phantom T12-L5, {args.spacing} mm, grid {baseline.spine.shape_ijk}; L1 wedged 30 %")
    print(f"per-level motion up to {args.per_level_deg} deg / {args.per_level_mm} mm on top of a global motion")
    print(f"{'level':6} {'ours TRE mm':>12} {'whole-spine TRE mm':>19} {'ours s':>7}")
    failures = []
    whole_fails = 0
    per_level_s = []
    for label in levels:
        name = VERTEBRA_NAMES[label]
        matrix = np.asarray(motions[name]["matrix"], dtype=float)
        truth = sitk.AffineTransform(tuple(matrix[:3, :3].ravel()), tuple(matrix[:3, 3]))
        points = surface_points_lps(baseline.spine.to_sitk() == label)
        expected = transform_points(truth, points)

        def tre(transform: sitk.Transform, points=points, expected=expected) -> float:
            return float(np.linalg.norm(transform_points(transform, points) - expected, axis=1).mean())

        registration = ours.registrations.get(label)
        ours_tre = tre(registration.transform) if registration else float("nan")
        whole_tre = tre(whole)
        seconds = registration.seconds if registration else float("nan")
        per_level_s.append(seconds)
        limit = TRE_COLLAPSED_MM if name == "L1" else TRE_INTACT_MM
        flag = "" if ours_tre <= limit else f"  <-- ours over {limit} mm"
        whole_fails += whole_tre > FAIL_MM
        if ours_tre > limit or not np.isfinite(ours_tre):
            failures.append(f"{name}: our TRE {ours_tre:.2f} mm > {limit} mm")
        print(f"{name:6} {ours_tre:12.2f} {whole_tre:19.2f} {seconds:7.2f}{flag}")
    median = float(np.nanmedian(per_level_s))
    print(f"ours: {ours_total:.1f} s in all ({median:.2f} s median per vertebra, limit {LIMIT_S_PER_VERTEBRA} s)")
    print(f"whole-spine intensity rigid: {whole_total:.1f} s ({whole_total / len(levels):.2f} s per vertebra)")
    print(f"time ratio ours / whole-spine: {ours_total / whole_total:.2f}")
    print(f"whole-spine registration off by > {FAIL_MM} mm on {whole_fails} of {len(levels)} levels; ours on 0")
    assert median <= LIMIT_S_PER_VERTEBRA, f"median {median:.2f} s per vertebra > {LIMIT_S_PER_VERTEBRA} s"
    assert not failures, "; ".join(failures)
    assert whole_fails > 0, "the whole-spine registration did not fail anywhere: make the per-level motion larger"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
