"""Agreement statistics against textbook values and exact geometric cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spinekit.cli import main
from spinekit.errors import GridMismatchError
from spinekit.io import Volume, write_labels
from spinekit.morphometry.agreement import (
    bland_altman,
    bland_altman_plot,
    dice,
    dice_per_slice,
    icc_2_1,
    label_agreement,
    mean_absolute_error,
    measure_agreement,
    pearson,
    surface_distances,
)

#: Shrout & Fleiss 1979, Table 2: 6 targets rated by 4 judges; their Table 4 gives ICC(2,1) = 0.29.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def test_icc_shrout_fleiss_table() -> None:
    assert icc_2_1(SHROUT_FLEISS) == pytest.approx(0.2898, abs=5e-4)


def test_icc_perfect_agreement_and_bias() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert icc_2_1(np.stack([x, x], 1)) == pytest.approx(1.0)
    assert icc_2_1(np.stack([x, x + 2.0], 1)) < 0.8  # absolute agreement penalises a constant bias


def test_dice_and_per_slice() -> None:
    a = np.zeros((4, 10, 10), bool)
    b = np.zeros((4, 10, 10), bool)
    a[:2, :5] = True
    b[:2, :4] = True
    assert dice(a, b) == pytest.approx(2 * 80 / (100 + 80))
    per = dice_per_slice(a, b)
    assert per[0] == pytest.approx(2 * 40 / 90) and np.isnan(per[3])


def test_surface_distance_of_shifted_cube_in_mm() -> None:
    a = np.zeros((30, 30, 30), bool)
    a[5:20, 5:20, 5:20] = True
    b = np.roll(a, 3, axis=0)
    hd95, msd, hd = surface_distances(a, b, (2.0, 1.0, 1.0))
    assert hd == pytest.approx(6.0)  # 3 slices of 2 mm
    assert 0 < msd < hd95 <= 6.0


def test_pearson_mae_bland_altman() -> None:
    x = np.array([10.0, 12.0, 14.0, 16.0, 18.0])
    y = x - 1.0 + np.array([0.1, -0.1, 0.2, -0.2, 0.0])
    r, p = pearson(x, y)
    assert r > 0.99 and p < 0.001
    assert mean_absolute_error(x, y) == pytest.approx(np.mean(np.abs(x - y)))
    ba = bland_altman(x, y)
    diff = x - y
    assert ba.mean_difference == pytest.approx(1.0)
    assert ba.upper_limit == pytest.approx(diff.mean() + 1.96 * diff.std(ddof=1))


def test_bland_altman_png(tmp_path) -> None:
    path = bland_altman_plot([1, 2, 3, 4], [1.1, 2.2, 2.9, 4.3], tmp_path / "ba.png", unit="mm")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _labels(shift: int) -> Volume:
    array = np.zeros((20, 20, 20), np.int16)
    array[5:12, 5:12, 5:12] = 1
    array[14:18, 3:8, 3:8] = 2
    return Volume(np.roll(array, shift, axis=2), (1.0, 1.0, 2.0), (10.0, -5.0, 3.0))


def test_label_agreement_table() -> None:
    table = label_agreement(_labels(1), _labels(0))
    row = table[table["label"] == 1].iloc[0]
    assert row["dice"] == pytest.approx(6 / 7)
    assert row["hausdorff_mm"] == pytest.approx(1.0)
    with pytest.raises(GridMismatchError):
        label_agreement(_labels(0), Volume(np.zeros((5, 5, 5), np.int16)))


def test_evaluate_cli_labels_and_measures(tmp_path, capsys) -> None:
    write_labels(_labels(1), tmp_path / "p.nii.gz")
    write_labels(_labels(0), tmp_path / "r.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "p.nii.gz"), "--ref", str(tmp_path / "r.nii.gz")]) == 0
    assert "dice" in capsys.readouterr().out
    rows = [("s1", "L1", "h", 25.0), ("s1", "L2", "h", 26.0), ("s2", "L1", "h", 24.0), ("s2", "L2", "h", 27.5)]
    pred = pd.DataFrame(rows, columns=["subject", "structure", "metric", "value"]).assign(unit="mm")
    ref = pred.assign(value=pred["value"] + [0.2, -0.1, 0.3, 0.0])
    pred.to_csv(tmp_path / "p.csv", index=False)
    ref.to_csv(tmp_path / "r.csv", index=False)
    out = tmp_path / "agree"
    args = ["evaluate", "--measures", "--pred", str(tmp_path / "p.csv"), "--ref", str(tmp_path / "r.csv")]
    assert main([*args, "--out", str(out)]) == 0
    table = measure_agreement(pred, ref)
    assert table.loc[0, "n"] == 4 and table.loc[0, "bias"] == pytest.approx(-0.1)
    assert (out / "agreement.csv").exists() and (out / "bland_altman_h.png").exists()
