"""Follow-up scans of a phantom: a known rigid motion per vertebra, new collapse, lesion growth."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from spinekit.errors import InputError
from spinekit.phantom.config import FRACTURE_TYPES, FollowupConfig, PhantomConfig
from spinekit.phantom.model import FollowupSpec, build_model


def _rigid(rotation: np.ndarray, centre: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 rotation about ``centre`` followed by ``translation``."""
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = centre + translation - rotation @ centre
    return m


def _random_rotation(rng: np.random.Generator, max_deg: float, min_fraction: float = 0.0) -> np.ndarray:
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(max_deg) * rng.uniform(min_fraction, 1.0)
    return Rotation.from_rotvec(axis * angle).as_matrix()


def sample_motions(baseline_config: PhantomConfig, config: FollowupConfig, base=None) -> FollowupSpec:
    """Draw the global motion and each vertebra's motion (4x4, baseline LPS -> follow-up LPS)."""
    if config.collapse_type not in FRACTURE_TYPES:
        raise InputError(f"collapse_type must be one of {FRACTURE_TYPES}, not {config.collapse_type!r}")
    for level, loss in config.collapse.items():
        if not 0 <= float(loss) <= 0.6:
            raise InputError(f"collapse of {level} must be a height-loss fraction in [0, 0.6], not {loss}")
    base = base if base is not None else build_model(baseline_config)
    rng = np.random.default_rng([config.seed, 11])
    nk, nj, ni = base.grid_shape
    centre = base.origin + base.direction @ (np.asarray(base.spacing) * (np.array([ni, nj, nk]) - 1) / 2)
    g = _rigid(
        _random_rotation(rng, config.max_rotation_deg, 0.5),
        centre,
        rng.uniform(-config.max_translation_mm, config.max_translation_mm, 3),
    )
    motions = {}
    for name, shape in base.vertebrae.items():
        local = _rigid(
            _random_rotation(rng, config.per_level_rotation_deg),
            shape.pose.origin,
            rng.uniform(-config.per_level_translation_mm, config.per_level_translation_mm, 3),
        )
        motions[name] = g @ local
    collapse = {}
    for level, loss in config.collapse.items():
        from spinekit.labels import VERTEBRA_NAMES, parse_level

        collapse[VERTEBRA_NAMES[parse_level(level)]] = float(loss)
    return FollowupSpec(g, motions, collapse, config.collapse_type, config.lesion_growth_mm)


def motion_truth(matrix: np.ndarray, centroid: np.ndarray) -> dict:
    rot = Rotation.from_matrix(matrix[:3, :3])
    return {
        "matrix": np.round(matrix, 8).tolist(),
        "matrix_followup_to_baseline": np.round(np.linalg.inv(matrix), 8).tolist(),
        "rotation_deg": np.round(rot.as_euler("xyz", degrees=True), 5).tolist(),
        "rotation_angle_deg": round(math.degrees(rot.magnitude()), 5),
        "translation_mm": np.round(matrix[:3, 3], 5).tolist(),
        "centroid_displacement_mm": np.round(matrix[:3, :3] @ centroid + matrix[:3, 3] - centroid, 5).tolist(),
    }
