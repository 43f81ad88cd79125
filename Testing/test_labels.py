"""labels: conventions of DESIGN.md."""

from __future__ import annotations

import pytest

from spinekit import labels as lb
from spinekit.errors import LabelError


def test_verse_numbering_and_discs():
    assert lb.VERTEBRA_NAMES[1] == "C1" and lb.VERTEBRA_NAMES[8] == "T1" and lb.VERTEBRA_NAMES[20] == "L1"
    assert lb.VERTEBRA_NAMES[25] == "L6" and lb.VERTEBRA_NAMES[26] == "S1" and lb.VERTEBRA_NAMES[28] == "T13"
    assert lb.disc_label(lb.parse_level("L4")) == 123
    assert lb.disc_name(23) == "L4/L5" and lb.disc_name(24) == "L5/S1" and lb.disc_name(19) == "T12/L1"
    assert lb.disc_name(24, lb.L6) == "L5/L6"
    assert lb.spine_label_info(123).name == "disc L4/L5"
    assert lb.spine_label_info(123).code.value == "243923001"
    assert lb.spine_label_info(20).code.value == "66794005"
    assert lb.spine_label_info(lb.CANAL).name == "spinal canal" and lb.CANAL == 60 and lb.CORD == 61


def test_muscle_numbering_is_fixed():
    assert [lb.muscle_label(g, s) for g in ("psoas", "quadratus_lumborum", "multifidus", "erector_spinae")
            for s in ("left", "right")] == list(range(1, 9))  # fmt: skip
    assert lb.MUSCLES[9].name == "autochthon_left"


def test_level_range_craniocaudal():
    assert lb.parse_level_range("T10-S1") == [17, 18, 19, 20, 21, 22, 23, 24, 26]
    assert lb.parse_level_range("L4-L6") == [23, 24, 25]
    with pytest.raises(LabelError, match="cranial first"):
        lb.parse_level_range("S1-L1")
    with pytest.raises(LabelError, match="unknown vertebral level"):
        lb.parse_level("L9")


def test_every_spine_label_has_info():
    for value in [*lb.VERTEBRA_NAMES, *(100 + v for v in lb.VERTEBRA_NAMES if v != lb.SACRUM), 60, 61]:
        info = lb.spine_label_info(value)
        assert info.name and len(info.color) == 3 and info.code.value
    with pytest.raises(LabelError):
        lb.spine_label_info(59)


def test_unknown_level_instances_have_names():
    assert lb.spine_label_info(201).name == "vertebra ?1"
    assert lb.spine_label_info(302).name == "disc ?2/?3"
    assert not lb.is_vertebra(201) and lb.is_unknown_vertebra(201)
    with pytest.raises(LabelError, match="unknown-level"):
        lb.spine_label_info(251)


def test_vertebra_and_disc_masks_cover_levelled_and_unknown_labels():
    import numpy as np

    values = np.array([0, 1, 24, 25, 26, 28, 60, 101, 124, 128, 201, 230, 301, 330, 21])
    vertebra = lb.vertebra_mask(values)
    assert values[vertebra].tolist() == [1, 24, 25, 28, 201, 230, 21]
    assert lb.SACRUM in values[lb.vertebra_mask(values, sacrum=True)]
    assert values[lb.disc_mask(values)].tolist() == [101, 124, 128, 301, 330]
