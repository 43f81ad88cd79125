"""import-seg on the real TotalSegmentator outputs of ct_lumbar_3mm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from spinekit import labels as lb
from spinekit.cli import main
from spinekit.errors import LabelError
from spinekit.io import read_labels
from spinekit.label_import import convert_labels


def _superior_mm(volume, mask):
    k, j, i = ndimage.center_of_mass(mask)
    return volume.index_to_lps(np.array([i, j, k]))[2]


def test_totalsegmentator_total_levels_in_anatomical_order(shared_data):
    seg = read_labels(shared_data / "ct_lumbar_3mm" / "totalseg_total_fast.nii.gz")
    result = convert_labels(seg, "totalsegmentator")
    present = [v for v in lb.CRANIOCAUDAL_ORDER if (result.spine.array == v).any()]
    assert present == [18, 19, 20, 21, 22, 23, 24, 26]  # T11 ... L5, sacrum (+S1 merged)
    heights = [_superior_mm(result.spine, result.spine.array == v) for v in present]
    assert all(a > b for a, b in zip(heights, heights[1:], strict=False)), heights  # each level below the previous one
    assert (result.spine.array == lb.CORD).sum() > 0
    muscles = result.muscles.array
    # psoas and autochthon: odd labels on the patient's left (LPS +x)
    for left, right in ((1, 2), (9, 10)):
        xl = result.muscles.index_to_lps(np.array(ndimage.center_of_mass(muscles == left))[::-1])[0]
        xr = result.muscles.index_to_lps(np.array(ndimage.center_of_mass(muscles == right))[::-1])[0]
        assert xl > xr


def test_vertebrae_body_levelled_from_total(shared_data):
    folder = shared_data / "ct_lumbar_3mm"
    body = read_labels(folder / "totalseg_vertebrae_body.nii.gz")
    total = read_labels(folder / "totalseg_total_fast.nii.gz")
    result = convert_labels(body, "vertebrae_body", levels_from=total)
    values = set(np.unique(result.spine.array).tolist())
    assert {20, 21, 22, 23, 24}.issubset(values)
    assert {120, 121, 122, 123}.issubset(values)  # L1/L2 ... L4/L5
    # each disc lies between its two vertebrae
    for upper in (20, 21, 22, 23):
        z_disc = _superior_mm(result.spine, result.spine.array == 100 + upper)
        assert _superior_mm(result.spine, result.spine.array == upper + 1) < z_disc
        assert z_disc < _superior_mm(result.spine, result.spine.array == upper)
    with pytest.raises(LabelError, match="--levels-from"):
        convert_labels(body, "vertebrae_body")


def test_spineps_endplates_merge_and_unknown_source():
    from spinekit.io import Volume

    array = np.zeros((4, 4, 4), np.int16)
    array[0] = 23
    array[1] = 223
    array[2] = 123
    result = convert_labels(Volume(array), "spineps")
    assert (result.spine.array[:2] == 23).all() and (result.spine.array[2] == 123).all()
    with pytest.raises(LabelError, match="unknown label source"):
        convert_labels(Volume(array), "nnunet")


def test_cli_import_seg(shared_data, tmp_path, capsys):
    out = tmp_path / "spine.nii.gz"
    rc = main(["import-seg", str(shared_data / "ct_lumbar_3mm" / "totalseg_total_fast.nii.gz"),
               "--from", "totalsegmentator", "--out", str(out)])  # fmt: skip
    assert rc == 0 and out.exists()
    assert (tmp_path / "spine_muscles.nii.gz").exists()
    assert "wrote" in capsys.readouterr().out
