"""Cohort statistics on numbers whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spinekit.cohort import analysis


def test_robust_z_matches_iglewicz_hoaglin_by_hand() -> None:
    z = analysis.robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan]))
    # median 3, MAD = median(2, 1, 0, 1, 97) = 1
    np.testing.assert_allclose(z[:5], 0.6745 * np.array([-2, -1, 0, 1, 97]))
    assert np.isnan(z[5])
    # MAD = 0: mean absolute deviation 0.8, SD estimate 1.2533 * 0.8
    z0 = analysis.robust_z(np.array([5.0, 5.0, 5.0, 5.0, 9.0]))
    assert z0[-1] == pytest.approx(4.0 / (1.2533 * 0.8))
    assert (analysis.robust_z(np.ones(4)) == 0).all()


def test_flag_outliers_groups_by_metric_structure_and_sex() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(20):
        sex = "FM"[s % 2]
        base = 30.0 if sex == "M" else 25.0  # sexes differ: a pooled z would flag nothing sensible
        value = base + rng.normal(0, 0.5)
        if s == 4:
            value = 29.0  # a woman with a man's value: an outlier only within her sex
        rows.append({"subject": f"s{s}", "structure": "L1", "metric": "height", "value": value, "sex": sex})
    flagged = analysis.flag_outliers(pd.DataFrame(rows))
    assert flagged.loc[flagged["outlier"], "subject"].tolist() == ["s4"]


def test_bland_altman_bias_and_limits() -> None:
    agreement = analysis.bland_altman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.0, 4.0, 5.2]))
    sd = np.std([1, 1, 1, 1.2], ddof=1)
    assert agreement.n == 4 and agreement.bias == pytest.approx(1.05)
    assert agreement.loa_low == pytest.approx(1.05 - 1.96 * sd) and agreement.loa_high == pytest.approx(
        1.05 + 1.96 * sd
    )


def test_reference_pairs_by_structure() -> None:
    metrics = pd.DataFrame(
        {"subject": ["a", "a", "b", "b"], "structure": ["L1", "L2"] * 2, "metric": ["h"] * 4, "value": [1, 2, 3, 4.0]}
    )
    subjects = pd.DataFrame({"subject_id": ["a", "b"], "reference_h@L2": [2.5, 3.5], "reference_h": [1.0, 2.0]})
    pairs = analysis.reference_pairs(metrics, subjects)
    assert pairs[("h", "L2")]["measured"].tolist() == [2.0, 4.0]
    assert pairs[("h", "mean over structures")]["measured"].tolist() == [1.5, 3.5]


def _stats(n: int, spacing: float, fov: float, p50: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n):
        row = {"subject": f"{spacing}-{s}"}
        for axis in "ijk":
            row[f"spacing_{axis}"] = spacing * (1 + rng.normal(0, 0.01))
            row[f"fov_{axis}_mm"] = fov * (1 + rng.normal(0, 0.02))
        for p in (1, 5, 25, 50, 75, 95, 99):
            row[f"p{p}"] = p50 + 5 * (p - 50) + rng.normal(0, 3)
        rows.append(row)
    return rows


def test_acquisition_groups_recover_two_protocols() -> None:
    from spinekit.cohort.imagestats import feature_columns

    stats = pd.DataFrame(_stats(12, 1.0, 300.0, 100.0, 0) + _stats(9, 3.0, 420.0, 300.0, 1))
    groups = analysis.acquisition_groups(stats, feature_columns())
    assert groups.k == 2 and groups.silhouette > 0.5
    by_protocol = groups.labels.groupby(groups.labels.index.str.split("-").str[0]).nunique()
    assert (by_protocol == 1).all(), "each protocol must fall in exactly one group"
    assert sorted(groups.summary["n"]) == [9, 12]
    single = analysis.acquisition_groups(pd.DataFrame(_stats(15, 1.0, 300.0, 100.0, 2)), feature_columns())
    assert single.k == 1


def test_group_effects_find_the_metric_that_depends_on_protocol() -> None:
    rng = np.random.default_rng(3)
    groups = pd.Series([1] * 10 + [2] * 10, index=[f"s{i}" for i in range(20)])
    rows = []
    for i, subject in enumerate(groups.index):
        rows.append(
            {"subject": subject, "structure": "L1", "metric": "biased", "value": rng.normal(10 + 3 * (i >= 10))}
        )
        rows.append({"subject": subject, "structure": "L1", "metric": "fair", "value": rng.normal(10)})
    effects = analysis.group_effects(pd.DataFrame(rows), groups).set_index("metric")
    assert effects.loc["biased", "differs"] and not effects.loc["fair", "differs"]


def test_benjamini_hochberg_by_hand() -> None:
    q = analysis.benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2]))
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
