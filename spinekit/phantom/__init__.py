"""Synthetic spine CT/MRI phantom with exact ground truth (tests, demo, training data).

The anatomy is built from analytic solids in physical LPS millimetres and then sampled on the
configured voxel grid, so any spacing, origin or oblique direction shows the same anatomy:

* vertebral bodies: superellipse endplates (rounder anteriorly, flat posterior wall), planar wedge
  endplates (optionally biconcave cups), 1 mm cortical shell, trabecular interior at the set vBMD;
* posterior elements: pedicles, lamina, spinous and transverse processes, articular processes;
* discs between the endplate surfaces of their two vertebrae (annulus + nucleus), whose wedge
  angles carry the set lordosis/kyphosis; the sacrum as a tapering block; spinal canal (label 60);
* paraspinal muscles (psoas, quadratus lumborum, multifidus, erector spinae per side) with set
  cross-sectional areas and fat fractions, retroperitoneal/paraspinal fat, subcutaneous fat, body
  outline, air outside;
* CT in HU (trabecular HU from vBMD via ``contrast.hu_from_bmd``) or T1/T2-like MRI with a bias
  field; Gaussian partial-volume blur, then Gaussian (CT) or Rician (MRI) noise from ``seed``.

Truth schema (``Phantom.truth``, written as truth.json; all positions LPS mm, axes unit vectors)::

    schema_version, config (PhantomConfig as dict), modality, image_unit, spacing_mm,
    grid {size_ijk, origin_lps, direction}, anatomy_offset_lps,
    height_positions {anterior/middle/posterior_fraction_of_depth (0.15/0.5/0.85), description},
    vertebrae {"L1": {label, centroid_lps (whole label incl. posterior elements), volume_mm3,
        label_volume_mm3 (voxels of the label x voxel volume on this grid), body_centroid_lps, body_volume_mm3,
        posterior_volume_mm3 (posterior elements outside the body), body_frame_origin_lps, superior_axis_lps,
        anterior_axis_lps, left_axis_lps, superior/inferior_endplate_normal_lps,
        body_heights_mm {anterior, middle, posterior}, height_lines_lps {key: [inferior, superior]},
        body_width_mm, body_depth_mm, wedge_angle_deg, endplate_area_mm2,
        trabecular_bmd_mg_cm3, trabecular_hu}, "S1": {label 26, centroid_lps, volume_mm3, axes,
        body_heights_mm None}},
    discs {"L4/L5": {label 123, heights_mm {anterior, middle, posterior}, height_lines_lps,
        centroid_lps, volume_mm3, label_volume_mm3, centre_lps, superior_axis_lps, anterior_axis_lps, depth_mm,
        width_mm}},
    muscles {"psoas_left": {label 1, fat_fraction, csa_mm2 {landmark: area}, csa_set_mm2 {...}}},
    csa_planes {landmark: {point_lps, normal_lps, left_axis_lps, posterior_axis_lps,
        angle_to_structure_axis_deg}},
    canal {label 60, area_mm2 {landmark: area in csa_planes[landmark], bone excluded}, area_set_mm2,
        width_mm, depth_mm (left-right / antero-posterior diameters of the set ellipse), description},
    curvature {lordosis_deg, kyphosis_deg (None when L1/S1 or T4/T12 are absent), definitions},
    fracture {level, type, height_loss, heights_before_mm, heights_after_mm} | None,
    lesions [{index, level, label, kind, radius_mm, centre_lps, volume_mm3}],
    calibration {bmd_per_hu, bmd_intercept_mg_cm3, formula},
    followup (follow-up phantoms, and the baseline truth.json written with --followup):
        {motions {level: {matrix (4x4, maps BASELINE LPS points to FOLLOW-UP LPS points),
        matrix_followup_to_baseline, rotation_deg (extrinsic xyz Euler), rotation_angle_deg,
        translation_mm, centroid_displacement_mm}}, global_motion {...},
        collapse {level: {type, height_loss, heights_before_mm, heights_after_mm}},
        volumes {level or disc: {label, baseline_mm3, followup_mm3, change_mm3 (exact; 0 for intact levels),
        baseline_label_mm3, followup_label_mm3 (as painted)}}, lesion_growth_mm}

Fractures (``fracture`` at baseline, ``collapse`` at follow-up) deform the body only: the frame, the inferior
endplate and the posterior elements stay, the superior endplate drops (wedge: anterior height x (1 - loss),
posterior kept; crush: every height x (1 - loss); biconcave: both endplates cup, middle height x (1 - loss)).
At follow-up the neighbours keep their motion and the disc above fills the gap; at baseline the spine above
rests on the lowered endplate, held at the posterior wall by the facets (``anatomy.Element.resting_drop``).

Label maps versus exact volumes: a vertebra rigidly moved on a 1 mm grid keeps its label volume within about
+-0.3 % of ``volume_mm3`` (1.5 mm: +-1 %; the unmoved baseline, whose left-right faces are parallel to the grid,
is the worst case). Heights measured on one line of a label map are quantised to a voxel; compare against
truth with a bundle of lines or a tolerance of one voxel.

Body heights are measured along the vertebra's own superior axis on its mid-sagittal line at 15/50/85 %
of the body depth from the anterior edge; disc heights the same way in the disc's frame (depth = disc
depth) between the endplate surfaces of its vertebrae. Muscle CSA landmarks are every vertebra (plane
through the point of the soft-tissue axis nearest the body centre) and every disc (nearest the disc
centre); each plane is perpendicular to the soft-tissue axis there (normal in ``csa_planes``; it is
within a few degrees of the structure's superior axis, see ``angle_to_structure_axis_deg``). Bone and
canal are excluded from muscle labels and areas.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from spinekit.io import Volume, write_labels, write_volume
from spinekit.phantom.config import DEFAULT_NOISE_SD, FollowupConfig, PhantomConfig
from spinekit.phantom.contrast import bmd_from_hu, hu_from_bmd, lookup_table, synthesize
from spinekit.phantom.followup import motion_truth, sample_motions
from spinekit.phantom.model import Model, build_model, rasterize
from spinekit.phantom.shapes import MUSCLE_BASE
from spinekit.phantom.softtissue import MUSCLE_SHAPES
from spinekit.phantom.truth import compute_truth, load_truth, write_truth

__all__ = [
    "FollowupConfig",
    "Phantom",
    "PhantomConfig",
    "bmd_from_hu",
    "hu_from_bmd",
    "load_truth",
    "make_followup",
    "make_phantom",
    "write_demo_phantom",
]

logger = logging.getLogger(__name__)


@dataclass
class Phantom:
    """Images, label maps and truth of one phantom scan.

    Attributes:
        image: CT (HU, float32) or MRI-like intensities.
        spine: vertebrae (VerSe numbers), discs (100 + upper), canal 60.
        muscles: 1/2 psoas, 3/4 quadratus lumborum, 5/6 multifidus, 7/8 erector spinae (odd = left).
        truth: JSON-serialisable ground truth (schema in the module docstring).
        lesions: lesion index map (1..n in the order of ``config.lesions``), None without lesions.
        tissue: tissue-class map (codes in ``spinekit.phantom.shapes``; muscles are 20 + label).
        model: the analytic solids the scan was painted from (None for a phantom read back from disk).
    """

    image: Volume
    spine: Volume
    muscles: Volume
    truth: dict
    lesions: Volume | None = None
    tissue: Volume | None = None
    model: Model | None = field(default=None, repr=False, compare=False)

    @property
    def config(self) -> PhantomConfig:
        return PhantomConfig.from_dict(self.truth["config"])

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write image/spine/muscles (.nii.gz), lesions.nii.gz when present, and truth.json, each atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "image": write_volume(self.image, out / "image.nii.gz"),
            "spine": write_labels(self.spine, out / "spine.nii.gz"),
            "muscles": write_labels(self.muscles, out / "muscles.nii.gz"),
        }
        if self.lesions is not None:
            paths["lesions"] = write_labels(self.lesions, out / "lesions.nii.gz")
        paths["truth"] = write_truth(self.truth, out / "truth.json")
        return paths


def _render(model: Model, modality: str, seed_key: list[int]) -> Phantom:
    config = model.config
    tissue, spine, muscles = rasterize(model)
    fat = {}
    for group, (_, left, _) in MUSCLE_SHAPES.items():
        fat[left] = fat[left + 1] = model.soft.fat_fraction(group)
    lut = lookup_table(modality, config.bmd_mg_cm3, fat)
    noise = DEFAULT_NOISE_SD[modality] if config.noise_sd is None else config.noise_sd
    rng = np.random.default_rng(seed_key)
    image = synthesize(tissue, lut, model.spacing, modality, config.blur_mm, noise, rng)
    geometry = {"spacing": model.spacing, "origin": tuple(model.origin), "direction": model.direction}
    lesion_map = None
    if model.lesions:
        lesion_map = _lesion_map(model, tissue.shape)
    truth = compute_truth(model)
    truth["modality"] = modality
    _add_label_volumes(truth, spine, float(np.prod(model.spacing)))
    if modality == "ct":  # CT is stored as integer HU, as scanners do
        image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    return Phantom(
        image=Volume(image.astype(np.float32) if modality != "ct" else image, **geometry),
        spine=Volume(spine, **geometry),
        muscles=Volume(muscles, **geometry),
        truth=truth,
        lesions=None if lesion_map is None else Volume(lesion_map, **geometry),
        tissue=Volume(tissue, **geometry),
        model=model,
    )


def _add_label_volumes(truth: dict, spine: np.ndarray, voxel_mm3: float) -> None:
    """``label_volume_mm3``: the volume each vertebra and disc has in the label map as painted on this grid.

    It differs from the exact ``volume_mm3`` by the partial-volume error of a binary label map: about +-0.3 % at
    1 mm and up to ~1 % at 1.5 mm for a vertebra (thin posterior elements; worst on the unmoved baseline, whose
    left-right faces are parallel to the voxel grid).
    """
    counts = np.bincount(spine[spine > 0], minlength=256)  # bincount of the labelled voxels only (fast)
    for group in ("vertebrae", "discs"):
        for entry in truth[group].values():
            entry["label_volume_mm3"] = round(float(counts[entry["label"]]) * voxel_mm3, 1)


def _volume_table(baseline: dict, followup: dict) -> dict:
    """Per vertebra and disc: exact and label-map volumes of both scans (intact levels: equal exact volumes)."""
    out = {}
    for group in ("vertebrae", "discs"):
        for name, before in baseline[group].items():
            after = followup[group][name]
            out[name] = {
                "label": before["label"],
                "baseline_mm3": before["volume_mm3"],
                "followup_mm3": after["volume_mm3"],
                "change_mm3": round(after["volume_mm3"] - before["volume_mm3"], 1),
                "baseline_label_mm3": before.get("label_volume_mm3"),
                "followup_label_mm3": after.get("label_volume_mm3"),
            }
    return out


def _lesion_map(model: Model, shape: tuple[int, int, int]) -> np.ndarray:
    from spinekit.phantom.model import _index_box, _points

    out = np.zeros(shape, dtype=np.uint8)
    for lesion in model.lesions:
        vert = model.vertebrae[lesion["level"]]
        lo_idx, hi_idx = _index_box(model, vert)
        if lo_idx is None:
            continue
        pts = _points(model, lo_idx, hi_idx)
        q = vert.pose.to_local(pts)
        inside = (np.sum((q - lesion["centre_local"]) ** 2, axis=1) <= lesion["radius_mm"] ** 2) & vert.in_body(q)
        sub = tuple(slice(a, b) for a, b in zip(lo_idx, hi_idx, strict=True))
        out[sub][inside.reshape(tuple(b - a for a, b in zip(lo_idx, hi_idx, strict=True)))] = lesion["index"]
    return out


def make_phantom(config: PhantomConfig = PhantomConfig()) -> Phantom:  # noqa: B008
    """Build a phantom scan with exact ground truth (deterministic for a given config, seed included)."""
    model = build_model(config)
    return _render(model, config.modality, [config.seed, 0])


def make_followup(baseline: Phantom, config: FollowupConfig = FollowupConfig()) -> Phantom:  # noqa: B008
    """A follow-up of ``baseline`` on the same grid: per-vertebra rigid motion, collapse, lesion growth.

    ``truth["followup"]["motions"][level]["matrix"]`` maps BASELINE LPS points to FOLLOW-UP LPS points
    (x_followup = M @ x_baseline, homogeneous); ``matrix_followup_to_baseline`` is its inverse, the
    transform a registration of the follow-up (moving) onto the baseline (fixed) resamples with.
    A collapsed vertebra keeps its frame, inferior endplate and posterior elements (all move with its motion);
    its superior endplate drops and the disc above fills the gap. Every intact level is the same solid as at
    baseline (``truth["followup"]["volumes"]`` lists exact and painted volumes of both scans).
    """
    base_config = baseline.config
    spec = sample_motions(base_config, config, baseline.model)
    modality = config.modality or base_config.modality
    model = build_model(base_config, spec)
    if baseline.model is not None:
        model.moment_cache = baseline.model.moment_cache  # intact levels are the same solids
    phantom = _render(model, modality, [config.seed, 1])
    base_vert = baseline.truth["vertebrae"]
    motions = {name: motion_truth(m, np.asarray(base_vert[name]["centroid_lps"])) for name, m in spec.motions.items()}
    collapse = {}
    for level, loss in spec.collapse.items():
        collapse[level] = {
            "type": spec.collapse_type,
            "height_loss": loss,
            "heights_before_mm": base_vert[level]["body_heights_mm"],
            "heights_after_mm": phantom.truth["vertebrae"][level]["body_heights_mm"],
        }
    phantom.truth["followup"] = {
        "seed": config.seed,
        "matrix_convention": "matrix maps baseline LPS points to follow-up LPS points (x_f = M x_b)",
        "motions": motions,
        "global_motion": motion_truth(spec.global_motion, np.zeros(3)),
        "collapse": collapse,
        "volumes": _volume_table(baseline.truth, phantom.truth),
        "lesion_growth_mm": config.lesion_growth_mm,
        "followup_config": {k: v for k, v in vars(config).items()},
    }
    return phantom


def write_demo_phantom(out_dir: str | os.PathLike, spacing: float = 1.5) -> dict[str, Path]:
    """Baseline + follow-up CT pair for the demo (T12-S1, 1.5 mm, L1 collapsing 30 % at follow-up).

    Writes out_dir/{image,spine,muscles}.nii.gz + truth.json (with the follow-up motions) and
    out_dir/followup/{image,spine,muscles}.nii.gz + truth.json. Returns the paths; follow-up keys are
    prefixed "followup_".
    """
    out = Path(out_dir)
    baseline = make_phantom(replace(PhantomConfig(), spacing=(spacing, spacing, spacing)))
    followup = make_followup(baseline, FollowupConfig(collapse={"L1": 0.3}))
    baseline.truth["followup"] = followup.truth["followup"]
    paths = baseline.write(out)
    paths.update({f"followup_{k}": v for k, v in followup.write(out / "followup").items()})
    return paths


# keep linters aware these are used by the re-exported API
_ = (hu_from_bmd, bmd_from_hu, load_truth, MUSCLE_BASE)
