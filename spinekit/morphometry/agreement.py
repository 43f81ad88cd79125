"""Agreement statistics between two segmentations or two sets of measurements.

- Dice (Dice 1945, Ecology 26:297), volumetric and per slice.
- Surface distances in mm: 95th-percentile symmetric Hausdorff distance and mean symmetric
  surface distance (Taha & Hanbury 2015, BMC Med Imaging 15:29, Eq. 21-24), from Euclidean
  distance transforms with the voxel spacing (grids are orthonormal, so index-space distances
  scaled by spacing are physical distances).
- Pearson R with two-sided p-value (scipy.stats.pearsonr), mean absolute error.
- ICC(2,1): two-way random effects, absolute agreement, single measure
  (Shrout & Fleiss 1979, Psychol Bull 86:420, Eq. for ICC(2,1); McGraw & Wong 1996 "ICC(A,1)").
- Bland-Altman mean difference and 95 % limits of agreement, mean +- 1.96 SD
  (Bland & Altman 1986, Lancet 327:307).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from spinekit.errors import GridMismatchError, InputError
from spinekit.io import Volume, write_png


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (NaN when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else math.nan


def dice_per_slice(a: np.ndarray, b: np.ndarray, axis: int = 0) -> np.ndarray:
    """Dice per slice along array ``axis`` (NaN where both masks are empty on the slice)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    other = tuple(i for i in range(a.ndim) if i != axis)
    inter = (a & b).sum(axis=other).astype(float)
    total = (a.sum(axis=other) + b.sum(axis=other)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / total, np.nan)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def surface_distances(a: np.ndarray, b: np.ndarray, spacing_zyx: tuple[float, ...]) -> tuple[float, float, float]:
    """(HD95, mean symmetric surface distance, max Hausdorff) in mm between two boolean masks."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() or not b.any():
        return math.nan, math.nan, math.nan
    surface_a, surface_b = _surface(a), _surface(b)
    dist_to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing_zyx)
    dist_to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing_zyx)
    d_ab = dist_to_b[surface_a]
    d_ba = dist_to_a[surface_b]
    both = np.concatenate([d_ab, d_ba])
    hd95 = max(float(np.percentile(d_ab, 95)), float(np.percentile(d_ba, 95)))
    return hd95, float(both.mean()), float(both.max())


def label_agreement(pred: Volume, ref: Volume, labels: list[int] | None = None) -> pd.DataFrame:
    """Per-label Dice, HD95 and mean surface distance (mm) between two label maps on the same grid."""
    if not pred.same_grid(ref):
        raise GridMismatchError(
            "prediction and reference label maps are on different grids; resample one onto the other with "
            "spinekit.io.resample_labels_to(pred, ref)"
        )
    if labels is None:
        labels = sorted(set(np.unique(pred.array).tolist()) | set(np.unique(ref.array).tolist()) - {0})
    spacing_zyx = tuple(pred.spacing[::-1])
    records = []
    for value in labels:
        if value == 0:
            continue
        a, b = pred.array == value, ref.array == value
        box = ndimage.find_objects((a | b).astype(np.uint8))
        if not box or box[0] is None:
            continue
        sl = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in box[0])
        hd95, msd, hd = surface_distances(a[sl], b[sl], spacing_zyx)
        per_slice = dice_per_slice(a[sl], b[sl], axis=0)
        records.append(
            {
                "label": int(value),
                "dice": dice(a, b),
                "dice_per_slice_mean": float(np.nanmean(per_slice)) if np.any(np.isfinite(per_slice)) else math.nan,
                "hd95_mm": hd95,
                "msd_mm": msd,
                "hausdorff_mm": hd,
                "volume_pred_mm3": float(a.sum()) * pred.voxel_volume_mm3,
                "volume_ref_mm3": float(b.sum()) * ref.voxel_volume_mm3,
            }
        )
    return pd.DataFrame.from_records(records)


def mean_absolute_error(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.mean(np.abs(x - y)))


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson R and two-sided p-value (NaN for fewer than 3 pairs or constant input)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan, math.nan
    result = stats.pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)


def icc_2_1(ratings: np.ndarray) -> float:
    """ICC(2,1) of an (n targets x k raters) matrix, Shrout & Fleiss 1979.

    ICC(2,1) = (BMS - EMS) / (BMS + (k - 1) EMS + k (JMS - EMS) / n), with BMS, JMS, EMS the
    between-targets, between-raters and residual mean squares of the two-way ANOVA.
    """
    y = np.asarray(ratings, float)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise InputError("ICC needs a matrix of at least 2 targets x 2 raters")
    n, k = y.shape
    grand = y.mean()
    ss_rows = k * np.sum((y.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((y.mean(axis=0) - grand) ** 2)
    ss_total = np.sum((y - grand) ** 2)
    ss_error = ss_total - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    ems = ss_error / ((n - 1) * (k - 1))
    denominator = bms + (k - 1) * ems + k * (jms - ems) / n
    return float((bms - ems) / denominator) if denominator != 0 else math.nan


@dataclass(frozen=True)
class BlandAltman:
    mean_difference: float
    sd_difference: float
    lower_limit: float
    upper_limit: float
    n: int


def bland_altman(x: np.ndarray, y: np.ndarray) -> BlandAltman:
    """Mean difference (x - y) and 95 % limits of agreement (mean +- 1.96 SD, Bland & Altman 1986)."""
    diff = np.asarray(x, float) - np.asarray(y, float)
    mean = float(diff.mean()) if len(diff) else math.nan
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
    return BlandAltman(mean, sd, mean - 1.96 * sd, mean + 1.96 * sd, len(diff))


def bland_altman_plot(x: np.ndarray, y: np.ndarray, path: str | os.PathLike, title: str = "", unit: str = "") -> Path:
    """Bland-Altman plot (difference vs mean, with mean and limits of agreement) written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = np.asarray(x, float), np.asarray(y, float)
    ba = bland_altman(x, y)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.scatter((x + y) / 2, x - y, s=14, color="tab:blue")
    for level, style in ((ba.mean_difference, "-"), (ba.lower_limit, "--"), (ba.upper_limit, "--")):
        ax.axhline(level, color="tab:red", linestyle=style, linewidth=1)
    suffix = f" ({unit})" if unit else ""
    ax.set_xlabel(f"mean of the two{suffix}")
    ax.set_ylabel(f"difference{suffix}")
    ax.set_title(
        title or f"Bland-Altman: bias {ba.mean_difference:.3g}, LoA [{ba.lower_limit:.3g}, {ba.upper_limit:.3g}]"
    )
    fig.tight_layout()
    return write_png(fig, path)


def measure_agreement(pred: pd.DataFrame, ref: pd.DataFrame, plot_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Agreement per metric between two tidy measurement tables, paired on subject x structure x metric.

    Returns one row per metric with n, Pearson R and p, MAE, ICC(2,1), Bland-Altman bias and limits.
    With ``plot_dir`` a Bland-Altman PNG per metric is written there.
    """
    keys = [c for c in ("subject", "structure", "metric") if c in pred.columns and c in ref.columns]
    if "metric" not in keys or "value" not in pred.columns or "value" not in ref.columns:
        raise InputError("measurement tables need at least the columns structure, metric, value")
    merged = pred.merge(ref, on=keys, suffixes=("_pred", "_ref"))
    merged = merged[np.isfinite(merged["value_pred"]) & np.isfinite(merged["value_ref"])]
    records = []
    for metric, group in merged.groupby("metric"):
        x, y = group["value_pred"].to_numpy(float), group["value_ref"].to_numpy(float)
        r, p = pearson(x, y)
        ba = bland_altman(x, y)
        icc = icc_2_1(np.stack([x, y], axis=1)) if len(x) >= 2 else math.nan
        unit = group["unit_pred"].iloc[0] if "unit_pred" in group else ""
        records.append(
            {
                "metric": metric,
                "unit": unit,
                "n": len(x),
                "pearson_r": r,
                "p_value": p,
                "mae": mean_absolute_error(x, y),
                "icc_2_1": icc,
                "bias": ba.mean_difference,
                "loa_low": ba.lower_limit,
                "loa_high": ba.upper_limit,
            }
        )
        if plot_dir is not None and len(x) >= 2:
            Path(plot_dir).mkdir(parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(metric))
            bland_altman_plot(x, y, Path(plot_dir) / f"bland_altman_{safe}.png", str(metric), unit)
    return pd.DataFrame.from_records(records)
