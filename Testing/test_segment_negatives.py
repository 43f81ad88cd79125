"""Tests of the non-spine training subjects (limbs, heads): anatomy in the stated ranges, target all background."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spinekit.segment import negatives as neg
from spinekit.segment.networks import task_config
from spinekit.segment.synthesis import SynthesisSettings, ct_window, synthesize_ct

SPACING = 1.5  # mm: fine enough to measure the layers to about a voxel


def test_limb_has_bone_in_a_muscle_ring():
    for seed in range(4):
        labels = neg.limb_labels(np.random.default_rng(seed), SPACING)
        bone = np.isin(labels, [neg.CORTICAL, neg.TRABECULAR, neg.MARROW])
        muscle = labels >= neg.MUSCLE_FIRST
        body = labels > 0
        assert 0.2 < muscle.sum() / body.sum() < 0.9  # muscle is most of a limb's bulk, not all of it
        for k in (0, labels.shape[0] - 1):  # shafts run the whole length: cut ends at both faces
            assert bone[k].any() and muscle[k].any()
        # the shaft lies inside the muscle: no bone voxel touches fat or skin
        fat_or_skin = np.isin(labels, [neg.SUBCUT_FAT, neg.SKIN])
        assert not (bone & np.roll(fat_or_skin, 1, axis=2)).any()
        mid = body[labels.shape[0] // 2]
        _, n_limbs = ndimage.label(mid)
        radius = np.sqrt(mid.sum() / n_limbs / np.pi) * SPACING  # mm, of each limb
        assert 44 < radius < 86, radius


def test_head_skull_thickness_in_adult_range():
    for seed in range(3):
        labels = neg.head_labels(np.random.default_rng(seed), SPACING)
        k, j, _ = (s // 2 for s in labels.shape)
        line = labels[k, j]  # left-right through the centre
        skull_mm = np.isin(line, [neg.CORTICAL, neg.TRABECULAR]).sum() * SPACING / 2
        assert 5.0 - SPACING <= skull_mm <= 9.0 + SPACING, skull_mm  # 5-9 mm, +-1 voxel
        assert (line == neg.BRAIN).sum() * SPACING > 100  # brain across the middle
        assert labels[0].max() == 0 and labels[:, 0].max() == 0  # air margin around the head


def test_non_spine_sources_are_all_background_and_synthesise_as_ct():
    config = task_config("muscles")
    sources = neg.non_spine_sources(config, 4, np.random.default_rng(0))
    assert [s.name.split("_")[1].rstrip("0123456789") for s in sources] == ["limb", "limb", "limb", "head"]
    for source in sources:
        assert source.target.shape == source.generation.shape and not source.target.any()
        assert source.unknown == () and source.sample_weight == neg.NEGATIVE_WEIGHT
    limb = sources[0].generation
    image = synthesize_ct(limb, neg.NON_SPINE_TISSUES, np.random.default_rng(1), SynthesisSettings())
    cortex = np.median(image[limb == neg.CORTICAL])
    muscle = np.median(image[limb >= neg.MUSCLE_FIRST])
    assert cortex > ct_window(np.array(400.0)) and ct_window(np.array(0.0)) < muscle < ct_window(np.array(100.0))


def test_training_draws_the_negatives(tmp_path):
    from spinekit.segment.train import TrainSettings, train

    settings = TrainSettings(task="muscles", steps=1, batch=1, n_phantoms=0, n_negatives=2,
                             data_dir=str(tmp_path / "none"))  # fmt: skip
    weights = train(settings, tmp_path / "run")
    meta = (tmp_path / "run" / "settings.json").read_text()
    assert weights.is_file() and '"n_negatives": 2' in meta
