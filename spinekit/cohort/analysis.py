"""Cohort statistics for the report: robust outliers, Bland-Altman agreement, acquisition groups.

Pure functions on DataFrames (no plotting), so each is tested on numbers whose answer is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: |modified z| above this flags an outlier (Iglewicz & Hoaglin 1993, "How to Detect and Handle Outliers", p. 11).
OUTLIER_Z = 3.5
#: 0.6745 = Phi^-1(0.75): makes MAD a consistent estimate of the SD for normal data (Iglewicz & Hoaglin 1993).
MAD_SCALE = 0.6745
#: when MAD is 0, the mean absolute deviation times 1.2533 (= sqrt(pi/2), SD/meanAD of a normal distribution)
#: estimates the SD instead: the fallback IBM SPSS documents for its modified z-score.
MEANAD_SCALE = 1.2533
#: a group needs at least this many subjects before robust z-scores mean anything.
MIN_GROUP = 5
#: 95 % limits of agreement = bias +- 1.96 SD of differences (Bland & Altman 1986, Lancet 1:307-310).
LOA_Z = 1.96
#: a clustering with a mean silhouette below this is no evidence of separate groups (Kaufman & Rousseeuw 1990,
#: "Finding Groups in Data", ch. 2: <= 0.25 means "no substantial structure").
MIN_SILHOUETTE = 0.25
#: false discovery rate for metrics that differ between acquisition groups (Benjamini & Hochberg 1995).
FDR = 0.05


def robust_z(values: np.ndarray) -> np.ndarray:
    """Modified z-score ``0.6745 (x - median) / MAD`` (Iglewicz & Hoaglin 1993); NaN stays NaN."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.full(values.shape, np.nan)
    median = np.median(finite)
    mad = np.median(np.abs(finite - median))
    if mad > 0:
        return MAD_SCALE * (values - median) / mad
    mean_ad = np.mean(np.abs(finite - median))
    if mean_ad > 0:
        return (values - median) / (MEANAD_SCALE * mean_ad)
    return np.zeros(values.shape)


def flag_outliers(metrics: pd.DataFrame, threshold: float = OUTLIER_Z, min_group: int = MIN_GROUP) -> pd.DataFrame:
    """Robust z-score of every value within its (metric, structure, sex) group; adds ``z`` and ``outlier``.

    Sex is a grouping variable only when both sexes have ``min_group`` subjects for that metric and structure;
    otherwise the sexes are pooled. Groups smaller than ``min_group`` get NaN z (no flag).
    """
    frame = metrics.copy()
    frame["z"] = np.nan
    if frame.empty:
        frame["outlier"] = False
        return frame
    has_sex = "sex" in frame.columns
    for _, group in frame.groupby(["metric", "structure"], sort=False):
        parts = [group]
        if has_sex:
            by_sex = [g for _, g in group.groupby(group["sex"].fillna(""), sort=False)]
            if len(by_sex) > 1 and all(len(g) >= min_group for g in by_sex):
                parts = by_sex
        for part in parts:
            if part["value"].notna().sum() >= min_group:
                frame.loc[part.index, "z"] = robust_z(part["value"].to_numpy())
    frame["outlier"] = frame["z"].abs() > threshold
    return frame


@dataclass(frozen=True)
class Agreement:
    """Bland-Altman agreement between a reference and our measurement (Bland & Altman 1986)."""

    metric: str
    structure: str
    n: int
    bias: float
    sd: float
    loa_low: float
    loa_high: float


def reference_pairs(metrics: pd.DataFrame, subjects: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Pairs (reference, measured) per ``reference_<metric>[@<structure>]`` manifest column.

    Without ``@structure`` the measured value is the subject's mean of that metric over its structures
    (a subject-level metric such as lordosis has one structure anyway).
    """
    pairs: dict[tuple[str, str], pd.DataFrame] = {}
    for column in [c for c in subjects.columns if c.startswith("reference_")]:
        spec = column[len("reference_") :]
        metric, _, structure = spec.partition("@")
        hits = metrics[metrics["metric"] == metric]
        if structure:
            hits = hits[hits["structure"] == structure]
        if hits.empty:
            continue
        measured = hits.groupby("subject")["value"].mean().rename("measured")
        reference = subjects.set_index(subjects["subject_id"].astype(str))[column].rename("reference")
        joined = pd.concat([reference, measured], axis=1, join="inner").dropna()
        if len(joined):
            pairs[(metric, structure or "mean over structures")] = joined
    return pairs


def bland_altman(reference: np.ndarray, measured: np.ndarray, metric: str = "", structure: str = "") -> Agreement:
    """Bias (measured - reference) and 95 % limits of agreement (Bland & Altman 1986)."""
    diff = np.asarray(measured, dtype=float) - np.asarray(reference, dtype=float)
    n = int(np.isfinite(diff).sum())
    bias = float(np.nanmean(diff)) if n else math.nan
    sd = float(np.nanstd(diff, ddof=1)) if n > 1 else math.nan
    return Agreement(metric, structure, n, bias, sd, bias - LOA_Z * sd, bias + LOA_Z * sd)


def silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette width (Rousseeuw 1987, J Comput Appl Math 20:53-65), Euclidean distance."""
    from scipy.spatial.distance import cdist

    unique = np.unique(labels)
    if len(unique) < 2 or len(unique) >= len(labels):
        return math.nan
    distances = cdist(features, features)
    widths = np.zeros(len(labels))
    for i, label in enumerate(labels):
        same = labels == label
        if same.sum() <= 1:
            continue  # s(i) = 0 for singletons (Rousseeuw 1987)
        a = distances[i, same].sum() / (same.sum() - 1)
        b = min(distances[i, labels == other].mean() for other in unique if other != label)
        widths[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return float(widths.mean())


@dataclass
class AcquisitionGroups:
    """Acquisition groups found by clustering image statistics."""

    labels: pd.Series  # subject -> group number (1..k)
    k: int
    silhouette: float
    embedding: pd.DataFrame  # subject -> pc1, pc2
    features: list[str]
    summary: pd.DataFrame  # per group: n and medians of the raw features


def acquisition_groups(
    stats: pd.DataFrame, features: list[str], max_k: int = 6, min_size: int | None = None
) -> AcquisitionGroups | None:
    """Ward hierarchical clustering (Ward 1963) of standardised image statistics, k chosen by silhouette.

    Features are standardised (z over the cohort) so spacing in mm and intensities in HU weigh alike; k runs from
    2 to ``max_k`` and the best mean silhouette wins; below :data:`MIN_SILHOUETTE` the cohort is one group.
    Clusterings with a group smaller than ``min_size`` (default: 3, or 2 % of the cohort) are not considered.
    Returns None with fewer than 4 subjects.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    columns = [c for c in features if c in stats.columns]
    data = stats.set_index("subject")[columns].apply(pd.to_numeric, errors="coerce").dropna()
    if len(data) < 4 or not columns:
        return None
    values = data.to_numpy(dtype=float)
    min_size = max(3, math.ceil(0.02 * len(data))) if min_size is None else min_size
    spread = values.std(axis=0)
    keep = spread > 1e-9 * (1 + np.abs(values.mean(axis=0)))
    standardised = (values[:, keep] - values[:, keep].mean(axis=0)) / spread[keep] if keep.any() else values[:, :0]
    best_k, best_s, labels = 1, math.nan, np.ones(len(data), dtype=int)
    if standardised.shape[1]:
        tree = linkage(standardised, method="ward")
        for k in range(2, min(max_k, len(data) - 1) + 1):
            candidate = fcluster(tree, k, criterion="maxclust")
            sizes = np.bincount(candidate)[1:]
            if len(np.unique(candidate)) < 2 or sizes.min() < min_size:
                continue  # a "group" of one or two scans is an outlier, not an acquisition protocol
            score = silhouette(standardised, candidate)
            if np.isfinite(score) and (not np.isfinite(best_s) or score > best_s):
                best_k, best_s, best_labels = k, score, candidate
        if np.isfinite(best_s) and best_s >= MIN_SILHOUETTE:
            labels = best_labels
        else:
            best_k = 1
    embedding = _pca2(standardised, data.index)
    series = pd.Series(labels, index=data.index, name="group")
    summary = data.assign(group=labels).groupby("group").median()
    summary.insert(0, "n", series.value_counts().sort_index())
    return AcquisitionGroups(series, best_k, best_s, embedding, columns, summary)


def _pca2(values: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """First two principal components (SVD of the centred data) for the scatter plot."""
    if values.shape[1] == 0:
        return pd.DataFrame({"pc1": np.zeros(len(index)), "pc2": np.zeros(len(index))}, index=index)
    centred = values - values.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    scores = u * s
    if scores.shape[1] < 2:
        scores = np.column_stack([scores[:, 0], np.zeros(len(index))])
    return pd.DataFrame({"pc1": scores[:, 0], "pc2": scores[:, 1]}, index=index)


def group_effects(metrics: pd.DataFrame, groups: pd.Series, fdr: float = FDR) -> pd.DataFrame:
    """Metrics that differ between acquisition groups: Kruskal-Wallis per metric x structure (Kruskal & Wallis
    1952), Benjamini-Hochberg adjusted (1995). Columns: metric, structure, n, h, p, q, differs."""
    from scipy.stats import kruskal

    columns = ["metric", "structure", "n", "h", "p", "q", "differs"]
    if groups.nunique() < 2 or metrics.empty:
        return pd.DataFrame(columns=columns)
    frame = metrics.merge(groups.rename("group"), left_on="subject", right_index=True)
    rows = []
    for (metric, structure), part in frame.groupby(["metric", "structure"]):
        samples = [g["value"].dropna().to_numpy() for _, g in part.groupby("group")]
        samples = [s for s in samples if len(s) >= 2]
        if len(samples) < 2 or np.ptp(np.concatenate(samples)) == 0:
            continue
        h, p = kruskal(*samples)
        rows.append({"metric": metric, "structure": structure, "n": sum(map(len, samples)), "h": h, "p": p})
    result = pd.DataFrame(rows, columns=columns[:-2])
    if result.empty:
        return pd.DataFrame(columns=columns)
    result["q"] = benjamini_hochberg(result["p"].to_numpy())
    result["differs"] = result["q"] < fdr
    return result.sort_values("q").reset_index(drop=True)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Adjusted p-values (q) controlling the false discovery rate (Benjamini & Hochberg 1995)."""
    p = np.asarray(p, dtype=float)
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(n)
    q[order] = np.clip(ranked, 0, 1)
    return q
