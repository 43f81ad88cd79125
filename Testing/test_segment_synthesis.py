"""Tests of the training-sample synthesis: SynthSeg generation classes and the phantoms' generation labels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from test_segment import toy_spine

from spinekit import labels as lb
from spinekit.segment.synthesis import SynthesisSettings, synthesize_image


def test_tissue_classes_share_one_intensity():
    """SynthSeg generation classes: labels of one tissue (vertebra, sacrum) differ by the jitter only."""
    from spinekit.segment.synthesis import TISSUES

    labels = toy_spine().array.astype(np.int32)  # 0 air, 1 vertebra, 2 sacrum, 3 disc, 4 canal
    lut = np.array([TISSUES.index(t) for t in ("air", "bone", "bone", "disc", "fluid")])
    quiet = SynthesisSettings(
        std_range=(0.0, 0.0), max_thickness_vox=1.0, bias_coeff=(0.0, 0.0), noise_std=0.0, gamma_range=(1.0, 1.0),
        ct_like_fraction=0.0, tissue_class_fraction=1.0, tissue_class_jitter=0.001,
    )  # fmt: skip
    for seed in range(4):
        image = synthesize_image(labels, np.random.default_rng(seed), quiet, tissue_lut=lut)
        core = {v: float(np.median(image[labels == v])) for v in range(5)}
        spread = max(core.values()) - min(core.values())
        assert abs(core[1] - core[2]) < 0.02 * spread  # vertebra and sacrum: one bone intensity
    independent = replace(quiet, tissue_class_fraction=0.0)
    steps = []
    for seed in range(4):
        image = synthesize_image(labels, np.random.default_rng(seed), independent, tissue_lut=lut)
        steps.append(abs(float(np.median(image[labels == 1]) - np.median(image[labels == 2]))))
    assert max(steps) > 0.1  # without classes each label draws its own mean


def test_phantom_posterior_elements_get_their_own_generation_labels():
    """Body and posterior elements of one vertebra: one target, two generation labels, both bone (bright, HU bone)."""
    from spinekit.phantom import PhantomConfig, make_phantom
    from spinekit.segment.dataset import POSTERIOR_GEN_OFFSET, from_phantom
    from spinekit.segment.networks import task_config
    from spinekit.segment.synthesis import TISSUES

    phantom = make_phantom(PhantomConfig(modality="t2", seed=3, levels="L3-S1", spacing=(2.0, 2.0, 2.0)))
    source = from_phantom(phantom, task_config("spine"))
    for level in (lb.VERTEBRA_LABELS["L3"], lb.VERTEBRA_LABELS["L4"]):
        body = source.generation == level
        posterior = source.generation == POSTERIOR_GEN_OFFSET + level
        assert body.sum() > posterior.sum() > 0.2 * body.sum()  # the body holds most of the bone
        assert set(np.unique(source.target[posterior])) == set(np.unique(source.target[body])) == {1}
        assert POSTERIOR_GEN_OFFSET + level in source.bright
        assert source.tissue_lut[POSTERIOR_GEN_OFFSET + level] == TISSUES.index("bone")


def test_axial_half_keeps_one_half_of_a_source_and_names_bad_halves():
    """Within-subject cross-validation: training sees one half of the slices, image and labels, never the other."""
    import argparse

    import pytest

    from spinekit.errors import InputError
    from spinekit.io import Volume
    from spinekit.segment.dataset import LabelMap, axial_half, inferior_half
    from spinekit.segment.train_cli import _axial_half

    k = np.arange(10)[:, None, None] * np.ones((1, 3, 3), int)  # array axis 0 runs inferior -> superior
    source = LabelMap("real", generation=k.astype(np.int32), target=k.astype(np.int16), image=k.astype(np.float32))
    lower, upper = axial_half(source, "inferior"), axial_half(source, "superior")
    assert np.unique(lower.target).tolist() == [0, 1, 2, 3, 4] and np.unique(upper.image).tolist() == [5, 6, 7, 8, 9]
    assert lower.generation.shape == (5, 3, 3) and upper.name == "real"
    volume = Volume(np.zeros((10, 3, 3), np.float32), (3.0, 3.0, 3.0), (0.0, 0.0, -20.0))
    assert np.flatnonzero(inferior_half(volume, 3.0)[:, 0, 0]).tolist() == [0, 1, 2, 3, 4]  # scored where unseen
    with pytest.raises(InputError, match="inferior"):
        axial_half(source, "left")
    assert _axial_half("mri_axial_dixon_L2L5:superior") == "mri_axial_dixon_L2L5:superior"
    with pytest.raises(argparse.ArgumentTypeError, match="SOURCE:HALF"):
        _axial_half("mri_axial_dixon_L2L5")
