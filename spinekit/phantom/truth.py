"""Exact ground truth of a phantom model: centroids, axes, heights, volumes, disc heights, muscle areas.

Quantities come from the analytic solids, never from the voxel grid: body heights from the endplate
surface functions, disc heights by bisection of the two endplate surfaces along the disc axis, volumes
and centroids of whole vertebrae and discs from a 0.5 mm lattice tilted ~9 deg against the structure's own frame
(the same solid tests the painter uses; converged to ~0.01 %), body volume by 0.1 mm quadrature of the height over
the endplate, muscle and canal areas by 0.3 mm sampling of the label functions (bone excluded) in the stated plane.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from spinekit.errors import InputError
from spinekit.io import atomic_path
from spinekit.labels import CANAL, MUSCLE_LABELS, SACRUM
from spinekit.phantom.anatomy import HEIGHT_OFFSET_FRACTION, build_chain
from spinekit.phantom.contrast import BMD_INTERCEPT, BMD_PER_HU, hu_from_bmd
from spinekit.phantom.model import Model
from spinekit.phantom.shapes import DiscShape, SacrumShape, VertebraShape, footprint_area, superellipse
from spinekit.phantom.softtissue import MUSCLE_SHAPES

SCHEMA_VERSION = 1
LATTICE_MM = 0.5
#: Rotation (about 9 deg) of the integration lattice against each solid's frame (see ``lattice_moments``).
LATTICE_ROTATION = Rotation.from_rotvec([0.101, 0.067, 0.123]).as_matrix()
CSA_STEP_MM = 0.3


def _r(x, nd: int = 4):
    return np.round(np.asarray(x, dtype=float), nd).tolist()


def lattice_moments(
    lo: np.ndarray, hi: np.ndarray, boxes: list, h: float = LATTICE_MM, minus: int | None = None
) -> tuple[float, np.ndarray, float]:
    """Volume (mm^3) and centroid (local) of a union of solids on a lattice; ``boxes`` = [(lo, hi, test)].

    The lattice is rotated by ``LATTICE_ROTATION`` against the solid's frame: the solids' flat faces are parallel
    to their frame, and a lattice parallel to them would put every node of a face at the same phase, an error of
    up to half a step times the face area that does not average out (0.2-0.5 % of a vertebra at 0.5 mm). Tilted,
    each face cuts the lattice at every phase and the count converges like a quadrature.

    Returns:
        volume, centroid (local mm), and the volume of the union of all boxes except ``minus`` that lies outside
        box ``minus`` (0 when ``minus`` is None), e.g. the posterior elements outside the vertebral body.
    """
    rot = LATTICE_ROTATION
    corners = lambda a, b: np.array([[x, y, z] for x in (a[0], b[0]) for y in (a[1], b[1]) for z in (a[2], b[2])])  # noqa: E731
    span = corners(lo, hi) @ rot  # lattice coordinates of the local box
    k_lo = np.floor(span.min(axis=0) / h).astype(int)
    n = np.ceil(span.max(axis=0) / h).astype(int) - k_lo + 1
    occupied = np.zeros(n, dtype=bool)
    excluded = np.zeros(n, dtype=bool) if minus is not None else None
    for index, (blo, bhi, test) in enumerate(boxes):
        c = corners(blo, bhi) @ rot
        a = np.clip(np.floor(c.min(axis=0) / h).astype(int) - k_lo, 0, n)
        b = np.clip(np.ceil(c.max(axis=0) / h).astype(int) - k_lo + 1, 0, n)
        if np.any(b <= a):
            continue
        u, v, w = ((k_lo[d] + np.arange(a[d], b[d])) * h for d in range(3))
        # local coordinates of the sub-lattice, one component at a time (no (N, 3) array before culling)
        comps = [
            rot[c, 0] * u[:, None, None] + rot[c, 1] * v[None, :, None] + rot[c, 2] * w[None, None, :] for c in range(3)
        ]
        keep = (comps[0] >= blo[0]) & (comps[0] <= bhi[0])
        for c in (1, 2):
            keep &= (comps[c] >= blo[c]) & (comps[c] <= bhi[c])
        sel = np.flatnonzero(keep)
        if not len(sel):
            continue
        q = np.stack([comp.reshape(-1)[sel] for comp in comps], axis=1)
        inside = np.zeros(keep.size, dtype=bool)
        inside[sel] = test(q)
        target = excluded if index == minus else occupied
        target[a[0] : b[0], a[1] : b[1], a[2] : b[2]] |= inside.reshape(keep.shape)
    part = 0.0
    if excluded is not None:
        part = float((occupied & ~excluded).sum()) * h**3
        occupied |= excluded
    idx = np.argwhere(occupied)
    if not len(idx):
        return 0.0, np.full(3, np.nan), part
    return len(idx) * h**3, ((k_lo + idx.mean(axis=0)) * h) @ rot.T, part


def _signed_angle(n_from: np.ndarray, n_to: np.ndarray, axis: np.ndarray) -> float:
    return math.degrees(math.atan2(float(np.cross(n_from, n_to) @ axis), float(n_from @ n_to)))


def _shape_key(shape) -> tuple:
    """Everything that defines a vertebra or sacrum solid in its own frame (not its pose)."""
    skip = {"name", "pose", "lesions", "posterior"}
    fields = tuple((k, float(v)) for k, v in vars(shape).items() if k not in skip)
    lesions = tuple((tuple(np.round(c, 9)), float(r), kind) for c, r, kind in getattr(shape, "lesions", ()))
    return type(shape).__name__, fields, tuple(sorted(shape.posterior.items())), lesions


def _cached(model: Model, shape, compute):
    """Local-frame lattice moments, shared by the models of one phantom series (a follow-up reuses intact levels)."""
    key = _shape_key(shape)
    if key not in model.moment_cache:
        model.moment_cache[key] = compute()
    return model.moment_cache[key]


def vertebra_truth(model: Model, name: str) -> dict:
    shape = model.vertebrae[name]
    pose = shape.pose
    lo, hi = shape.local_bbox()
    out = {
        "label": int(shape.label),
        "superior_axis_lps": _r(pose.axes[:, 2], 6),
        "anterior_axis_lps": _r(pose.axes[:, 1], 6),
        "left_axis_lps": _r(pose.axes[:, 0], 6),
        "body_frame_origin_lps": _r(pose.origin),
    }
    if isinstance(shape, SacrumShape):
        volume, centroid, _ = _cached(model, shape, lambda: lattice_moments(lo, hi, [(lo, hi, shape._inside)], h=0.75))
        out.update(
            centroid_lps=_r(pose.to_lps(centroid)),
            volume_mm3=round(volume, 1),
            body_heights_mm=None,
            superior_endplate_normal_lps=_r(pose.axes[:, 2], 6),
            note="sacrum block: frame origin = centre of the S1 superior endplate; no body heights",
        )
        return out
    prims = shape.primitives()
    volume, centroid, posterior_volume = _cached(
        model, shape, lambda: lattice_moments(lo, hi, [(p.lo, p.hi, p.test) for p in prims], minus=0)
    )
    # body: quadrature of the height over the endplate footprint
    h = 0.1
    xs = np.arange(-shape.width / 2, shape.width / 2, h) + h / 2
    ys = np.arange(-shape.depth / 2, shape.depth / 2, h) + h / 2
    xx, yy = np.meshgrid(xs, ys, indexing="ij")
    inside = superellipse(xx, yy, shape.width / 2, shape.depth / 2)
    top, bottom = shape.sup_surface(xx, yy), shape.inf_surface(xx, yy)
    height = np.where(inside, top - bottom, 0.0)
    body_volume = float(height.sum() * h * h)
    body_centroid = (
        np.array([(xx * height).sum(), (yy * height).sum(), (0.5 * (top + bottom) * height).sum()])
        * h
        * h
        / body_volume
    )
    u = HEIGHT_OFFSET_FRACTION * shape.depth
    heights, lines = {}, {}
    for key, ua in (("anterior", u), ("middle", 0.0), ("posterior", -u)):
        s_top, s_bottom = float(shape.sup_surface(0.0, ua)), float(shape.inf_surface(0.0, ua))
        heights[key] = round(s_top - s_bottom, 4)
        lines[key] = [_r(pose.to_lps([0.0, ua, s_bottom])), _r(pose.to_lps([0.0, ua, s_top]))]
    sup_n, inf_n = _sup(shape), _inf(shape)
    wedge = math.degrees(math.atan(shape.superior_tilt) - math.atan(shape.inferior_tilt))
    bmd = model.config.bmd_mg_cm3
    out.update(
        centroid_lps=_r(pose.to_lps(centroid)),
        volume_mm3=round(volume, 1),
        body_centroid_lps=_r(pose.to_lps(body_centroid)),
        body_volume_mm3=round(body_volume, 1),
        posterior_volume_mm3=round(posterior_volume, 1),
        body_heights_mm=heights,
        height_lines_lps=lines,
        body_width_mm=round(shape.width, 3),
        body_depth_mm=round(shape.depth, 3),
        wedge_angle_deg=round(wedge, 3),
        superior_endplate_normal_lps=_r(sup_n, 6),
        inferior_endplate_normal_lps=_r(inf_n, 6),
        endplate_area_mm2=round(footprint_area(shape.width / 2, shape.depth / 2), 2),
        trabecular_bmd_mg_cm3=bmd,
        trabecular_hu=round(hu_from_bmd(bmd), 2) if model.config.modality == "ct" else None,
    )
    return out


def _surface_crossing(disc: DiscShape, start: np.ndarray, direction: np.ndarray, solid, upper: bool) -> float:
    """Distance along ``direction`` from ``start`` where the line meets ``solid``'s facing endplate surface."""

    def f(lam: float) -> float:
        q = solid.pose.to_local(start + lam * direction)
        surface = solid.inf_surface(q[0], q[1]) if upper else solid.sup_surface(q[0], q[1])
        return float(q[2] - surface)

    a, b = (0.0, 40.0) if upper else (-40.0, 0.0)
    fa = f(a)
    for _ in range(60):
        mid = (a + b) / 2
        fm = f(mid)
        if (fm > 0) == (fa > 0):
            a, fa = mid, fm
        else:
            b = mid
    return (a + b) / 2


def disc_truth(model: Model, name: str) -> dict:
    disc = model.discs[name]
    pose = disc.pose
    s = pose.axes[:, 2]
    u = HEIGHT_OFFSET_FRACTION * disc.depth
    heights, lines = {}, {}
    for key, ua in (("anterior", u), ("middle", 0.0), ("posterior", -u)):
        start = pose.to_lps([0.0, ua, 0.0])
        top = _surface_crossing(disc, start, s, disc.upper, True)
        bottom = _surface_crossing(disc, start, s, disc.lower, False)
        heights[key] = round(top - bottom, 4)
        lines[key] = [_r(start + bottom * s), _r(start + top * s)]
    lo, hi = disc.local_bbox()

    def test(q):
        lps = pose.to_lps(q)
        inside = disc.tissue(lps) > 0
        idx = np.flatnonzero(inside)
        if len(idx):  # only the bodies of its vertebrae can reach a disc
            covered = disc.upper.in_body(disc.upper.pose.to_local(lps[idx]))
            if isinstance(disc.lower, VertebraShape):
                covered |= disc.lower.in_body(disc.lower.pose.to_local(lps[idx]))
            inside[idx[covered]] = False
        return inside

    volume, centroid, _ = lattice_moments(lo, hi, [(lo, hi, test)], h=0.6)
    return {
        "label": int(disc.label),
        "heights_mm": heights,
        "height_lines_lps": lines,
        "centroid_lps": _r(pose.to_lps(centroid)),
        "volume_mm3": round(volume, 1),
        "centre_lps": _r(pose.origin),
        "superior_axis_lps": _r(s, 6),
        "anterior_axis_lps": _r(pose.axes[:, 1], 6),
        "depth_mm": round(disc.depth, 3),
        "width_mm": round(disc.width, 3),
    }


def _plane_area(model: Model, point, x_axis, posterior, xs, vs, wanted) -> float:
    """Area (mm^2) of the points of a CSA plane where ``wanted(muscle, canal)`` holds, bone and discs excluded."""
    xx, vv = np.meshgrid(xs, vs, indexing="ij")
    lps = point + xx.reshape(-1, 1) * x_axis + vv.reshape(-1, 1) * posterior
    _, muscle, canal = model.soft_at(lps)
    hit = np.flatnonzero(wanted(muscle, canal))
    if len(hit):
        label, _ = model.spine_tissue_at(lps[hit])
        hit = hit[label == 0]
    return round(len(hit) * CSA_STEP_MM**2, 2)


def canal_truth(model: Model, planes: dict, sigmas: dict) -> dict:
    """Spinal canal (label 60) cross-section in every CSA plane: area as painted (bone excluded) and set ellipse.

    The canal is an ellipse in the normal plane of the soft-tissue axis, the plane of the muscle CSA, with
    semi-axes 1 mm inside the bony canal width and depth of ``anatomy.posterior_dims`` (Panjabi et al. 1991/1992).
    """
    soft = model.soft
    area, area_set, width, depth = {}, {}, {}, {}
    for name, plane in planes.items():
        i = soft._index(np.array([sigmas[name]]))[0]
        rx, rv, vc = (float(soft.table[k][i]) for k in ("canal_rx", "canal_rv", "canal_v"))
        point, x_axis, posterior = (np.asarray(plane[k]) for k in ("point_lps", "left_axis_lps", "posterior_axis_lps"))
        xs = np.arange(-rx - 1, rx + 1, CSA_STEP_MM) + CSA_STEP_MM / 2
        vs = vc + np.arange(-rv - 1, rv + 1, CSA_STEP_MM) + CSA_STEP_MM / 2
        area[name] = _plane_area(model, point, x_axis, posterior, xs, vs, lambda m, c: c)
        area_set[name] = round(math.pi * rx * rv, 2)
        width[name], depth[name] = round(2 * rx, 3), round(2 * rv, 3)
    return {
        "label": CANAL,
        "area_mm2": area,
        "area_set_mm2": area_set,
        "width_mm": width,
        "depth_mm": depth,
        "description": "canal (label 60) cross-section in csa_planes[landmark]: area_mm2 as painted (bone and "
        "disc voxels excluded), area_set_mm2 = pi * width/2 * depth/2 of the set ellipse (width left-right, depth "
        "antero-posterior)",
    }


def muscle_truth(model: Model) -> tuple[dict, dict, dict]:
    """Muscle CSA per landmark plane, the planes themselves, and their arc length on the soft-tissue axis."""
    soft = model.soft
    g = model.global_motion
    landmarks = [*[n for n in model.names if n != "S1"], *model.discs]
    planes, csa = {}, {key: {} for key in MUSCLE_LABELS if _group(key) in MUSCLE_SHAPES}
    csa_set = {key: {} for key in csa}
    sigmas = {}
    for name in landmarks:
        centre_c = model.elements[name].body_centre_yz
        sigma = float(soft.axis.project(centre_c[None, :])[0][0])
        sigmas[name] = sigma
        point_yz, tangent = soft.axis.at(sigma)
        to_lps = lambda c: c @ g[:3, :3].T + g[:3, 3]  # noqa: E731
        point = to_lps(np.array([0.0, *point_yz]) + model.offset)
        normal = g[:3, :3] @ np.array([0.0, *tangent])
        x_axis = g[:3, :3] @ np.array([1.0, 0.0, 0.0])
        posterior = g[:3, :3] @ np.array([0.0, tangent[1], -tangent[0]])
        structure = model.vertebrae[name] if name in model.vertebrae else model.discs[name]
        angle = math.degrees(math.acos(min(1.0, abs(float(normal @ structure.pose.axes[:, 2])))))
        planes[name] = {
            "point_lps": _r(point),
            "normal_lps": _r(normal, 6),
            "left_axis_lps": _r(x_axis, 6),
            "posterior_axis_lps": _r(posterior, 6),
            "angle_to_structure_axis_deg": round(angle, 3),
        }
        i = soft._index(np.array([sigma]))[0]
        for key in csa:
            group, side = _group(key), key.rsplit("_", 1)[1]
            rx, rv = float(soft.table[f"{group}_rx"][i]), float(soft.table[f"{group}_rv"][i])
            if rx <= 0 or sigma < soft.sigma_cut:
                csa[key][name] = 0.0
                csa_set[key][name] = 0.0
                continue
            xc, vc = float(soft.table[f"{group}_x"][i]), float(soft.table[f"{group}_v"][i])
            sign = 1.0 if side == "left" else -1.0
            xs = sign * (xc + np.arange(-rx - 1, rx + 1, CSA_STEP_MM))
            vs = vc + np.arange(-rv - 1, rv + 1, CSA_STEP_MM)
            label = MUSCLE_LABELS[key]
            csa[key][name] = _plane_area(model, point, x_axis, posterior, xs, vs, lambda m, c: (m == label) & ~c)  # noqa: B023
            csa_set[key][name] = round(math.pi * rx * rv, 2)
    muscles = {}
    for key in csa:
        muscles[key] = {
            "label": MUSCLE_LABELS[key],
            "fat_fraction": soft.fat_fraction(_group(key)),
            "csa_mm2": csa[key],
            "csa_set_mm2": csa_set[key],
        }
    return muscles, planes, sigmas


def _group(key: str) -> str:
    return key.rsplit("_", 1)[0]


def curvature(model: Model) -> dict:
    vert = model.vertebrae
    left = model.global_motion[:3, :3] @ np.array([1.0, 0.0, 0.0])
    out = {
        "lordosis_deg": None,
        "kyphosis_deg": None,
        "lordosis_definition": "signed angle from the L1 superior to the S1 superior endplate normal (Cobb)",
        "kyphosis_definition": "signed angle from the T12 inferior to the T4 superior endplate normal (Cobb)",
    }
    if "L1" in vert and "S1" in vert:
        out["lordosis_deg"] = round(_signed_angle(_sup(vert["L1"]), vert["S1"].pose.axes[:, 2], left), 4)
    if "T4" in vert and "T12" in vert:
        out["kyphosis_deg"] = round(_signed_angle(_inf(vert["T12"]), _sup(vert["T4"]), left), 4)
    return out


def _sup(shape: VertebraShape) -> np.ndarray:
    """Superior endplate normal (planar part, LPS): the plane s = a * superior_tilt + c has normal (0, -tilt, 1)."""
    t = shape.superior_tilt
    return shape.pose.axes @ (np.array([0.0, -t, 1.0]) / math.hypot(1, t))


def _inf(shape: VertebraShape) -> np.ndarray:
    t = shape.inferior_tilt
    return shape.pose.axes @ (np.array([0.0, -t, 1.0]) / math.hypot(1, t))


def compute_truth(model: Model) -> dict:
    """The truth dictionary of a model (schema in ``spinekit.phantom``)."""
    config = model.config
    vertebrae = {name: vertebra_truth(model, name) for name in model.names}
    discs = {name: disc_truth(model, name) for name in model.discs}
    muscles, planes, sigmas = muscle_truth(model)
    fracture = None
    if config.fracture:
        level = _level_name(config.fracture["level"])
        reference = {
            e.name: e for e in build_chain(replace(config, fracture=None), np.random.default_rng([config.seed, 7]))
        }
        before = dict(
            zip(("anterior", "middle", "posterior"), (round(x, 4) for x in reference[level].heights()), strict=True)
        )
        fracture = {
            **config.fracture,
            "level": level,
            "heights_before_mm": before,
            "heights_after_mm": vertebrae[level]["body_heights_mm"],
        }
    lesions = []
    for lesion in model.lesions:
        shape = model.vertebrae[lesion["level"]]
        r = lesion["radius_mm"]
        lesions.append(
            {
                "index": lesion["index"],
                "level": lesion["level"],
                "label": int(shape.label),
                "kind": lesion["kind"],
                "radius_mm": round(r, 4),
                "centre_lps": _r(shape.pose.to_lps(lesion["centre_local"])),
                "volume_mm3": round(4 / 3 * math.pi * r**3, 2),
            }
        )
    nk, nj, ni = model.grid_shape
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_dict(),
        "modality": config.modality,
        "image_unit": "HU" if config.modality == "ct" else "a.u. (0-1000)",
        "spacing_mm": list(model.spacing),
        "grid": {"size_ijk": [ni, nj, nk], "origin_lps": _r(model.origin), "direction": _r(model.direction, 8)},
        "anatomy_offset_lps": _r(model.offset),
        "height_positions": {
            "anterior_fraction_of_depth": round(0.5 - HEIGHT_OFFSET_FRACTION, 4),
            "middle_fraction_of_depth": 0.5,
            "posterior_fraction_of_depth": round(0.5 + HEIGHT_OFFSET_FRACTION, 4),
            "description": "heights along the structure's superior axis on its mid-sagittal line, at "
            f"+{HEIGHT_OFFSET_FRACTION} x depth (anterior), 0 (middle), -{HEIGHT_OFFSET_FRACTION} x depth "
            "(posterior) from the endplate centre along the anterior axis (15/50/85 % of the depth from the "
            "anterior edge); height_lines_lps give the end points",
        },
        "vertebrae": vertebrae,
        "discs": discs,
        "muscles": muscles,
        "csa_planes": planes,
        "canal": canal_truth(model, planes, sigmas),
        "curvature": curvature(model),
        "fracture": fracture,
        "lesions": lesions,
        "calibration": {
            "bmd_per_hu": BMD_PER_HU,
            "bmd_intercept_mg_cm3": BMD_INTERCEPT,
            "formula": "BMD [mg/cm3] = bmd_per_hu * HU + bmd_intercept",
        },
        "sacrum_label": SACRUM,
    }


def _level_name(name: str) -> str:
    from spinekit.labels import VERTEBRA_NAMES, parse_level

    return VERTEBRA_NAMES[parse_level(name)]


def write_truth(truth: dict, path: str | os.PathLike) -> Path:
    """Write truth JSON atomically."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        tmp.write_text(json.dumps(truth, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_truth(path: str | os.PathLike) -> dict:
    """Read a phantom's truth.json (a folder holding one is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "truth.json"
    if not path.exists():
        raise InputError(f"{path} does not exist; write a phantom with `spinekit phantom --out DIR` first")
    try:
        truth = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); regenerate the phantom") from None
    if "vertebrae" not in truth:
        raise InputError(f"{path} is not a phantom truth file (no 'vertebrae' key)")
    return truth
