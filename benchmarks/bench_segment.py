"""Benchmark of ``spinekit segment``: speed and memory on 2 CPU cores, Dice and level identification on real scans.

Speed: a lumbar CT with a T10-S1 field of view (phantom at 0.8 x 0.8 x 1 mm, 512-matrix-like size, and the real
3 mm CT of ../shared/data) and the axial Dixon MRI stack, end to end (``segment_image``, spine + muscles), each in its
own process so peak memory (ru_maxrss) is per case; the baseline is a plain full-volume sliding window of the same
network, with the same window overlap, over the image at its native grid (no resampling, no ROI), measured in the
same run.

Accuracy (real scans, ../shared/data; skipped when absent):
- ct_lumbar_3mm: Dice against TotalSegmentator's labels (silver standard): all vertebrae, per level, discs
  (``totalseg_vertebrae_body`` label 2), psoas vs iliopsoas (whole scan, and above the iliac crests where
  iliopsoas is psoas alone), multifidus + erector spinae vs autochthon; level
  identification = share of TotalSegmentator levels whose best-overlapping predicted label is the same level;
  rib-bearing vertebrae found (``spinekit.segment.ribs``) against TotalSegmentator's ribs: rib n counts for
  vertebra Tn when it comes within 10 mm of it (its fast model leaves 2-3 voxels between rib head and vertebra).
- mri_axial_dixon_L2L5: Dice of multifidus and erector spinae (left/right pooled) against the manual labels, over
  the whole stack and per half (``dataset.inferior_half``): a network trained with ``--axial-half`` on one half
  is scored on the other (within-subject cross-validation).
- mri_sagittal_2d (validA slices, never trained on): each real sagittal MRI slice as a pseudo-3D slab
  (``spinekit.segment.sagittal2d``); Dice of vertebral bodies (vertebra + sacrum classes) and discs on the slab's
  centre plane, counted within 8 mm of the labelled column (the masks label bodies only, so the posterior elements
  we segment are left out of the comparison); levels are right when the lowest labelled disc (above the labelled S1
  body) carries our L5/S1 label.

Run: ``.venv/bin/python benchmarks/bench_segment.py [--models-dir DIR] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: TotalSegmentator's rib n bears on vertebra Tn when within this gap (mm): see the module docstring.
RIB_GAP_MM = 10.0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else float("nan")


def _load_case(name: str):
    from spinekit.io import read_volume

    if name == "phantom_ct_T10_S1":  # generated once, cached in the temporary folder (outside the repository)
        import tempfile

        from spinekit.io import write_volume
        from spinekit.phantom import PhantomConfig, make_phantom

        cache = Path(tempfile.gettempdir()) / "bench_phantom_ct.nii.gz"
        if not cache.is_file():
            config = PhantomConfig(modality="ct", levels="T10-S1", spacing=(0.8, 0.8, 1.0))
            write_volume(make_phantom(config).image, cache)
        return read_volume(cache)
    if name == "real_ct_3mm":
        return read_volume(DATA / "ct_lumbar_3mm" / "ct.nii.gz")
    if name == "dixon_mri_axial":
        return read_volume(DATA / "mri_axial_dixon_L2L5" / "tum01_water.nii.gz")
    raise ValueError(name)


def _timed_case(name: str, models_dir: str | None, threads: int, mode: str, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    image = _load_case(name)
    options = {"models_dir": models_dir} if models_dir else {}
    start = time.perf_counter()
    if mode == "ours":
        from spinekit.segment.api import segment_image

        segment_image(image, ("spine", "muscles"), **options)
    else:  # plain full-volume sliding window at the native grid, both networks
        from monai.inferers import sliding_window_inference

        from spinekit.segment.guidance import guidance_channels
        from spinekit.segment.inference import OVERLAP
        from spinekit.segment.networks import load_model
        from spinekit.segment.synthesis import normalise_real

        for task in ("spine", "muscles"):
            network, config, _ = load_model(task, options.get("models_dir"))
            x = guidance_channels(normalise_real(image.array), None, config.classes)
            with torch.inference_mode():
                sliding_window_inference(torch.from_numpy(x[None]), config.patch, 2, network, overlap=OVERLAP)
    seconds = time.perf_counter() - start
    queue.put(
        {
            "case": name,
            "mode": mode,
            "seconds": seconds,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def run_isolated(name: str, models_dir: str | None, threads: int, mode: str) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_timed_case, args=(name, models_dir, threads, mode, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def raw_semantic_dice(image, ts, body: np.ndarray, models_dir: str | None) -> dict:
    """Dice of the spine network's classes before instance separation and QC gating (working grid)."""
    from spinekit.io import resample_like
    from spinekit.segment.inference import predict
    from spinekit.segment.networks import load_model

    network, config, _ = load_model("spine", models_dir)
    prediction = predict(network, config, image)
    grid = prediction.labels
    t = resample_like(ts, grid, is_label=True).array
    b = resample_like(ts.with_array(body.astype(np.int16)), grid, is_label=True).array
    p = grid.array
    return {
        "vertebra_class_dice": _dice(p == 1, (t >= 27) & (t <= 50)),
        "sacrum_class_dice": _dice(p == 2, (t == 25) | (t == 26)),
        "disc_class_dice": _dice(p == 3, b == 2),
        "mean_confidence": float(prediction.confidence.array[p > 0].mean()) if (p > 0).any() else float("nan"),
    }


def phantom_accuracy(models_dir: str | None) -> dict:
    """Dice and level identification on held-out phantoms (seeds never drawn in training), CT and T2 MRI."""
    from spinekit import labels as lb
    from spinekit.phantom import PhantomConfig, make_phantom
    from spinekit.segment.api import segment_image

    options = {"models_dir": models_dir} if models_dir else {}
    out = {}
    for modality in ("ct", "t2"):
        phantom = make_phantom(PhantomConfig(modality=modality, seed=4242, levels="T12-S1", spacing=(2.0, 2.0, 2.0)))
        result = segment_image(phantom.image, ("spine", "muscles"), **options)
        p, t = result.spine.array, phantom.spine.array
        levels = [v for v in np.unique(t) if lb.is_vertebra(int(v)) and v != lb.SACRUM]
        m, tm = result.muscles.array, phantom.muscles.array
        out[modality] = {
            "vertebrae_dice": _dice(lb.vertebra_mask(p), (t >= 1) & (t <= 25)),
            "sacrum_dice": _dice(p == lb.SACRUM, t == lb.SACRUM),
            "discs_dice": _dice(lb.disc_mask(p), (t > 100) & (t < 129)),
            "canal_dice": _dice(p == lb.CANAL, np.isin(t, [lb.CANAL, lb.CORD])),
            "levels_identified": f"{sum(_dice(p == v, t == v) > 0.5 for v in levels)}/{len(levels)}",
            "muscle_dice": {lb.MUSCLES[v].name: _dice(m == v, tm == v) for v in range(1, 9)},
            "qc_flags": [f["flag"] for f in result.qc["flags"]],
        }
    return out


def totalsegmentator_rib_bearing(ts) -> dict[str, list[str]]:
    """Vertebra name -> sides where TotalSegmentator's rib n lies within RIB_GAP_MM of vertebra Tn (label 44 - n)."""
    from scipy import ndimage

    from spinekit.label_import import TS_RIB_LABELS

    spacing_kji = tuple(ts.spacing[::-1])
    out: dict[str, list[str]] = {}
    for n in range(1, 13):
        vertebra = ts.array == 44 - n
        if not vertebra.any():
            continue
        gap = ndimage.distance_transform_edt(~vertebra, sampling=spacing_kji)
        for side, labels in TS_RIB_LABELS.items():
            if (gap[ts.array == labels[n - 1]] <= RIB_GAP_MM).any():
                out.setdefault(f"T{n}", []).append(side)
    return out


def accuracy(models_dir: str | None) -> dict:
    """Dice and level identification on the real scans (see module docstring)."""
    from spinekit import labels as lb
    from spinekit.io import read_labels, read_volume, resample_labels_to
    from spinekit.label_import import convert_labels
    from spinekit.segment.api import segment_image
    from spinekit.segment.dataset import dixon_manual_labels, dixon_muscle_order, inferior_half
    from spinekit.segment.networks import load_model

    options = {"models_dir": models_dir} if models_dir else {}
    out: dict = {}
    folder = DATA / "ct_lumbar_3mm"
    if folder.is_dir():
        image = read_volume(folder / "ct.nii.gz")
        result = segment_image(image, ("spine", "muscles"), **options)
        ts = read_labels(folder / "totalseg_total_fast.nii.gz")
        truth = convert_labels(ts, "totalsegmentator")
        body = read_labels(folder / "totalseg_vertebrae_body.nii.gz").array
        pred = result.spine.array
        t = truth.spine.array
        ct = {
            "vertebrae_dice": _dice(lb.vertebra_mask(pred), (t >= 1) & (t <= 25)),
            "sacrum_dice": _dice(pred == lb.SACRUM, t == lb.SACRUM),
            "discs_dice": _dice(lb.disc_mask(pred), body == 2),
        }
        per_level, identified = {}, 0
        levels = [v for v in np.unique(t) if 1 <= v <= 25]
        for level in levels:
            mask = t == level
            per_level[lb.VERTEBRA_NAMES[int(level)]] = _dice(pred == level, mask)
            values, counts = np.unique(pred[mask], return_counts=True)
            keep = values > 0
            best = int(values[keep][np.argmax(counts[keep])]) if keep.any() else 0
            identified += int(best == level)
        ct["per_level_dice"] = per_level
        ct["levels_identified"] = f"{identified}/{len(levels)}"
        m, tm = result.muscles.array, truth.muscles.array
        ct["psoas_vs_iliopsoas_dice"] = _dice(np.isin(m, [1, 2]), np.isin(tm, [1, 2]))
        # Above the iliac crests (top of TotalSegmentator v2 hip_left/hip_right, 77/78) iliopsoas is psoas major alone;
        # below, it includes iliacus, which no psoas segmentation should contain.
        crest = (
            int(np.argwhere(np.isin(ts.array, [77, 78]))[:, 0].max()) + 1 if np.isin(ts.array, [77, 78]).any() else 0
        )
        ct["psoas_above_iliac_crest_dice"] = _dice(np.isin(m[crest:], [1, 2]), np.isin(tm[crest:], [1, 2]))
        ct["mf_es_vs_autochthon_dice"] = _dice(np.isin(m, [5, 6, 7, 8]), np.isin(tm, [9, 10]))
        ct["qc_flags"] = [f["flag"] for f in result.qc["flags"]]
        ct["ribs_found"] = result.qc.get("ribs")
        ct["ribs_totalsegmentator"] = totalsegmentator_rib_bearing(ts)
        ct["raw_network"] = raw_semantic_dice(image, ts, body, options.get("models_dir"))
        out["ct_lumbar_3mm"] = ct
    folder = DATA / "mri_axial_dixon_L2L5"
    if folder.is_dir():
        image = read_volume(folder / "tum01_water.nii.gz")
        result = segment_image(image, ("spine", "muscles"), **options)
        manual = dixon_manual_labels(folder)
        classes = np.zeros(manual.array.shape, np.int16)
        for value, cls in dixon_muscle_order(manual).items():
            classes[manual.array == value] = cls
        m = resample_labels_to(result.muscles, manual).array
        lower = inferior_half(manual, load_model("muscles", models_dir, "cpu")[1].spacing_mm)
        halves = {
            f"{name}_half": {
                "multifidus_dice": _dice(np.isin(m[part], [5, 6]), classes[part] == 3),
                "erector_spinae_dice": _dice(np.isin(m[part], [7, 8]), classes[part] == 4),
            }
            for name, part in (("inferior", lower), ("superior", ~lower))
        }  # a network trained with --axial-half on one half is scored on the other (within-subject cross-validation)
        out["mri_axial_dixon_L2L5"] = {
            "multifidus_dice": _dice(np.isin(m, [5, 6]), classes == 3),
            "erector_spinae_dice": _dice(np.isin(m, [7, 8]), classes == 4),
            **halves,
            "qc_flags": [f["flag"] for f in result.qc["flags"]],
        }
    return out


def sagittal_mri_accuracy(models_dir: str | None) -> dict:
    """Bodies and discs on the held-out real sagittal MRI slices (see module docstring), network and pipeline."""
    from spinekit import labels as lb
    from spinekit.io import resample_like
    from spinekit.segment import sagittal2d
    from spinekit.segment.api import segment_image
    from spinekit.segment.inference import predict
    from spinekit.segment.networks import load_model

    network, config, _ = load_model("spine", models_dir)
    options = {"models_dir": models_dir} if models_dir else {}
    rows = []
    for item in sagittal2d.read_split(DATA / "mri_sagittal_2d", "validA"):
        volume = sagittal2d.slab(item.image)
        raw = sagittal2d.centre_plane(resample_like(predict(network, config, volume).labels, volume, is_label=True))
        result = segment_image(volume, ("spine",), **options)
        full = sagittal2d.centre_plane(resample_like(result.spine, volume, is_label=True))
        network_scores = sagittal2d.column_dice(item, np.isin(raw, [1, 2]), raw == 3)
        pipeline_scores = sagittal2d.column_dice(item, lb.vertebra_mask(full, sacrum=True), lb.disc_mask(full))
        rows.append(
            {
                "slice": item.name,
                "network_bodies_dice": network_scores[0],
                "network_discs_dice": network_scores[1],
                "bodies_dice": pipeline_scores[0],
                "discs_dice": pipeline_scores[1],
                "lumbosacral_disc_named": sagittal2d.lumbosacral_disc_named(item, full),
                "qc_flags": [f["flag"] for f in result.qc["flags"]],
            }
        )
    means = {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0] if key.endswith("dice")}
    named = sum(r["lumbosacral_disc_named"] for r in rows)
    return {"mean": means, "levels_from_the_sacrum_right": f"{named}/{len(rows)}", "slices": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    report: dict = {}
    if not args.skip_speed:
        limits = {"phantom_ct_T10_S1": 60, "real_ct_3mm": 60, "dixon_mri_axial": 20}
        for name, limit in limits.items():
            if name != "phantom_ct_T10_S1" and not DATA.is_dir():
                continue
            ours = run_isolated(name, args.models_dir, args.threads, "ours")
            plain = run_isolated(name, args.models_dir, args.threads, "plain")
            report[name] = {
                "ours_s": round(ours["seconds"], 1),
                "limit_s": limit,
                "plain_full_volume_s": round(plain["seconds"], 1),
                "speedup_vs_plain": round(plain["seconds"] / ours["seconds"], 2),
                "peak_mb_ours": round(ours["peak_mb"]),
                "peak_mb_plain": round(plain["peak_mb"]),
            }
            print(
                f"{name}: ours {ours['seconds']:.1f} s (limit {limit} s), plain sliding window "
                f"{plain['seconds']:.1f} s, ratio {plain['seconds'] / ours['seconds']:.2f}x, "
                f"peak {ours['peak_mb']:.0f} MB (limit 6144 MB)"
            )
    if not args.skip_accuracy and DATA.is_dir():
        report["accuracy"] = accuracy(args.models_dir)
        if (DATA / "mri_sagittal_2d").is_dir():
            report["accuracy"]["mri_sagittal_2d"] = sagittal_mri_accuracy(args.models_dir)
    if not args.skip_accuracy:
        report["phantoms"] = phantom_accuracy(args.models_dir)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
