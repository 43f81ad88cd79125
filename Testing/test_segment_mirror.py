"""Mirroring test-time augmentation: each network's reading of a left-right mirrored scan is the mirror image."""

from __future__ import annotations

import numpy as np
import pytest

from spinekit.segment import inference
from spinekit.segment.networks import load_model, model_paths


def _mirror_agreement(task: str, image) -> float:
    """Share of voxels whose class on the mirrored image equals the mirrored class on the image."""
    network, config, _ = load_model(task)
    grid = inference.to_network_grid(image, config.spacing_mm)
    mirrored = grid.with_array(np.ascontiguousarray(grid.array[:, :, ::-1]))  # LPS array axis 2 = left-right
    a = inference.predict(network, config, grid, network_grid=grid).labels.array
    b = inference.predict(network, config, mirrored, network_grid=mirrored).labels.array
    return float((a[:, :, ::-1] == b).mean())


@pytest.mark.parametrize("task", ["muscles", "spine"])
def test_prediction_is_mirror_symmetric(monkeypatch, task):
    from spinekit.phantom import PhantomConfig, make_phantom

    if not model_paths(task)[0].is_file():
        pytest.skip(f"no shipped {task} model")
    phantom = make_phantom(PhantomConfig(modality="t2", seed=5, levels="L3-S1", spacing=(3.0, 3.0, 3.0)))
    assert _mirror_agreement(task, phantom.image) == 1.0
    monkeypatch.setattr(inference, "MIRROR_AVERAGED_TASKS", ())
    assert _mirror_agreement(task, phantom.image) < 1.0  # one reading alone is not symmetric
