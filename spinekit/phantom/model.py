"""Assemble the phantom's solids in physical LPS space and paint them onto a voxel grid.

Everything is placed in a canonical anatomy frame (sacrum top at the origin, spine in the y-z plane),
then translated so the anatomy's bounding box is centred in the field of view of the configured grid
(``origin``, ``direction``, ``spacing``). Oblique directions therefore see the same anatomy, only sampled
on rotated voxels. A follow-up moves every vertebra by its own rigid motion and the soft tissue by the
global one; the grid stays the baseline grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from spinekit.errors import InputError
from spinekit.labels import CANAL, SACRUM, VERTEBRA_NAMES
from spinekit.phantom.anatomy import SACRUM_HEIGHT_MM, Element, apply_collapse, build_chain, level_names
from spinekit.phantom.config import PhantomConfig, validate
from spinekit.phantom.shapes import (
    CORTEX_MM,
    MUSCLE_BASE,
    DiscShape,
    Pose,
    RibShape,
    SacrumShape,
    VertebraShape,
    _in_box,
    matmul,
)
from spinekit.phantom.softtissue import SoftTissue, SpineAxis, muscle_areas

FOV_MARGIN_MM = 20.0  # above the top and below the bottom structure
#: Least gap (mm) between a facet tip and the neighbouring lamina (design value; see ``_clamp_facets``).
FACET_CLEARANCE_MM = 2.5


@dataclass
class FollowupSpec:
    """Motions (4x4, baseline LPS -> follow-up LPS) and shape changes of a follow-up scan."""

    global_motion: np.ndarray
    motions: dict[str, np.ndarray]
    collapse: dict[str, float] = field(default_factory=dict)
    collapse_type: str = "wedge"
    lesion_growth_mm: float = 0.0


@dataclass
class Model:
    config: PhantomConfig
    labels: list[int]
    elements: dict[str, Element]
    vertebrae: dict[str, VertebraShape | SacrumShape]
    discs: dict[str, DiscShape]
    soft: SoftTissue
    offset: np.ndarray
    grid_shape: tuple[int, int, int]  # (nk, nj, ni)
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray
    global_motion: np.ndarray = field(default_factory=lambda: np.eye(4))
    lesions: list[dict] = field(default_factory=list)
    ribs: list[RibShape] = field(default_factory=list)
    #: local-frame volume/centroid per solid (``truth._cached``); a follow-up shares its baseline's
    moment_cache: dict = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return level_names(self.labels)

    def to_canonical(self, lps: np.ndarray) -> np.ndarray:
        """Physical LPS -> canonical anatomy coordinates (undoing the global motion of a follow-up)."""
        g = self.global_motion
        if np.array_equal(g, np.eye(4)):
            return lps - self.offset
        return matmul(lps - g[:3, 3], g[:3, :3]) - self.offset

    def soft_at(self, lps: np.ndarray):
        return self.soft.evaluate(self.to_canonical(lps))

    def spine_tissue_at(self, lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Spine label and tissue code of the local-frame solids (discs, vertebrae, sacrum) at points."""
        label = np.zeros(len(lps), dtype=np.int16)
        tissue = np.zeros(len(lps), dtype=np.uint8)
        for shape in self.paint_order():
            lo, hi = shape.local_bbox()
            box = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            corners = shape.pose.to_lps(box)
            near = np.flatnonzero(_in_box(lps, corners.min(axis=0), corners.max(axis=0)))
            if not len(near):
                continue
            q = shape.pose.to_local(lps[near])
            sel = near[_in_box(q, lo, hi)]
            if len(sel):
                t = shape.tissue(lps[sel])
                hit = sel[t > 0]
                label[hit] = shape.label
                tissue[hit] = t[t > 0]
        return label, tissue

    def paint_order(self) -> list:
        return [*self.discs.values(), *self.vertebrae.values()]


def _axes(psi: float) -> np.ndarray:
    s = np.array([0.0, -math.sin(psi), math.cos(psi)])
    a = np.array([0.0, -math.cos(psi), -math.sin(psi)])
    return np.stack([np.array([1.0, 0.0, 0.0]), a, s], axis=1)


def _direction(config: PhantomConfig) -> np.ndarray:
    if config.direction is None:
        return np.eye(3)
    d = np.asarray(config.direction, dtype=float).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-6):
        raise InputError(f"direction {config.direction} is not orthonormal; pass a rotation matrix (row-major)")
    return d


def build_model(config: PhantomConfig, followup: FollowupSpec | None = None) -> Model:
    """All solids of ``config`` placed in LPS, with the grid they are painted on."""
    labels = validate(config)
    rng = np.random.default_rng([config.seed, 7])
    chain = build_chain(config, rng)
    elements = {e.name: e for e in chain}
    names = level_names(labels)
    reach = _facet_reach(chain)
    canonical = {}
    for name in names:
        e = elements[name]
        pose = Pose(np.array([0.0, *e.centre_yz]), _axes(e.psi))
        if e.kind == "sacrum":
            canonical[name] = SacrumShape("S1", SACRUM, e.width, e.depth, e.posterior, pose, SACRUM_HEIGHT_MM)
        else:
            canonical[name] = VertebraShape(
                name, e.label, e.width, e.depth, e.height, e.slope, e.posterior, pose, e.cup, e.cup, *reach[name]
            )
            canonical[name].drop, canonical[name].drop_slope = e.drop, e.drop_slope
    _clamp_facets([canonical[n] for n in names])
    soft = _soft_tissue(chain, config.sex)
    offset, grid_shape, spacing, origin, direction = _grid(config, canonical, soft)
    for shape in canonical.values():
        shape.pose = Pose(shape.pose.origin + offset, shape.pose.axes)
    lesions = _lesions(config, canonical, followup)
    global_motion = np.eye(4) if followup is None else followup.global_motion
    if followup is not None:
        for name, loss in followup.collapse.items():
            if name not in canonical or name == "S1":
                raise InputError(f"collapse level {name!r} is not a (non-sacral) vertebra of levels {config.levels}")
            shape = canonical[name]
            e = Element("vertebra", name, shape.label, shape.width, shape.depth, shape.height, shape.slope)
            e.cup, e.drop, e.drop_slope = shape.cup_sup, shape.drop, shape.drop_slope
            apply_collapse(e, followup.collapse_type, float(loss))  # the body only; the frame stays
            shape.cup_sup, shape.cup_inf, shape.drop, shape.drop_slope = e.cup, e.cup, e.drop, e.drop_slope
        for name, shape in canonical.items():
            shape.pose = shape.pose.moved(followup.motions[name])
    discs = {}
    for upper, lower in zip(names[:-1], names[1:], strict=True):
        e = elements[f"{upper}/{lower}"]
        pose = Pose(np.array([0.0, *e.centre_yz]) + offset, _axes(e.psi))
        if followup is not None:
            pose = pose.moved(_blend(followup.motions[upper], followup.motions[lower], pose.origin))
        discs[e.name] = DiscShape(
            e.name, e.label, e.width, e.depth, e.height, e.slope, pose, canonical[lower], canonical[upper]
        )
    ribs = [RibShape(canonical[name], side) for name in map(str.upper, config.rib_levels) for side in (1, -1)]
    return Model(
        config,
        labels,
        elements,
        canonical,
        discs,
        soft,
        offset,
        grid_shape,
        spacing,
        origin,
        direction,
        global_motion,
        lesions,
        ribs,
    )


def _facet_reach(chain: list[Element]) -> dict[str, tuple[float, float]]:
    """Facets reach 60 % of the posterior disc height above/below each body (they never meet the neighbour's)."""
    reach = {}
    for i, e in enumerate(chain):
        if e.kind != "vertebra":
            continue
        below = chain[i - 1] if i > 0 else None  # chain runs caudal -> cranial
        above = chain[i + 1] if i + 1 < len(chain) else None
        up = 0.6 * above.heights()[2] if above is not None and above.kind == "disc" else 4.0
        down = 0.6 * below.heights()[2] if below is not None and below.kind == "disc" else 4.0
        reach[e.name] = (up, down)
    return reach


def _clamp_facets(shapes: list) -> None:
    """Shorten facet tips that would come within ``FACET_CLEARANCE_MM`` of the neighbouring lamina.

    In lordotic segments the posterior disc gap closes towards the lamina, so a facet reaching 60 % of the
    posterior disc height can touch the neighbour's lamina; solids that overlap would make one label overwrite
    the other and the painted volume disagree with the truth. The clearance also absorbs the per-level motion
    of a follow-up (``FollowupConfig.per_level_*``) in all but extreme draws.
    """
    for upper, lower in zip(shapes[:-1], shapes[1:], strict=True):
        if isinstance(upper, VertebraShape) and isinstance(lower, VertebraShape):
            _limit_reach(upper, "facet_inf", "reach_down", lower)
            _limit_reach(lower, "facet_sup", "reach_up", upper)
        elif isinstance(upper, VertebraShape):  # the sacrum block: keep L5's facets above its top
            _limit_reach(upper, "facet_inf", "reach_down", lower)


def _limit_reach(shape: VertebraShape, facet: str, attr: str, other) -> None:
    if isinstance(other, VertebraShape):
        lamina = next(p for p in other.primitives() if p.name == "lamina")
        lo, hi = lamina.lo - FACET_CLEARANCE_MM, lamina.hi + FACET_CLEARANCE_MM
    else:
        lo, hi = other.local_bbox()
        lo, hi = lo - FACET_CLEARANCE_MM, hi + FACET_CLEARANCE_MM

    def clear(reach: float) -> bool:
        setattr(shape, attr, reach)
        prim = next(p for p in shape.primitives() if p.name == facet)
        axes = [np.arange(a, b + 0.5, 0.5) for a, b in zip(prim.lo, prim.hi, strict=True)]
        q = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        q = q[prim.test(q)]
        return not _in_box(other.pose.to_local(shape.pose.to_lps(q)), lo, hi).any()

    full = getattr(shape, attr)
    if clear(full):
        return
    a, b = 0.0, full
    if not clear(a):
        return
    for _ in range(10):
        mid = (a + b) / 2
        a, b = (mid, b) if clear(mid) else (a, mid)
    setattr(shape, attr, a)


def _soft_tissue(chain: list[Element], sex: str) -> SoftTissue:
    """Axis nodes at every body and disc centre (T1..S1) with the local anatomy for the cross-sections."""
    sacrum = chain[0]
    s_sacrum = _axes(sacrum.psi)[1:, 2]
    nodes_yz = [sacrum.centre_yz - 0.5 * SACRUM_HEIGHT_MM * s_sacrum, sacrum.centre_yz]
    tangents = [s_sacrum, s_sacrum]
    for e in chain[1:]:
        nodes_yz.append(e.body_centre_yz)
        tangents.append(_axes(e.psi)[1:, 2])
    axis = SpineAxis(np.array(nodes_yz), np.array(tangents))
    nodes = []
    for i, e in enumerate(chain):
        if e.kind == "disc":
            low, up = chain[i - 1], chain[i + 1]
            post = {k: (low.posterior[k] + up.posterior[k]) / 2 for k in up.posterior}
            areas = tuple((a + b) / 2 for a, b in zip(_areas(low), _areas(up), strict=True))
            width, depth = (low.width + up.width) / 2, (low.depth + up.depth) / 2
        else:
            post, areas, width, depth = e.posterior, _areas(e), e.width, e.depth
        sigma, _ = axis.project(e.body_centre_yz[None, :])
        nodes.append(
            {
                "name": e.name,
                "sigma": float(sigma[0]),
                "width": width,
                "depth": depth,
                "posterior": post,
                "areas": areas,
            }
        )
    sigma_cut = nodes[0]["sigma"]
    bottom, _ = axis.project(nodes_yz[0][None, :])
    return SoftTissue(axis, nodes, sex, sigma_cut, float(bottom[0]) - 0.5 * SACRUM_HEIGHT_MM)


def _areas(e: Element) -> tuple[float, ...]:
    return muscle_areas("L5" if e.kind == "sacrum" else e.name)


def _grid(config: PhantomConfig, shapes: dict, soft: SoftTissue):
    """Grid size and the offset that centres the anatomy's bounding box in the field of view."""
    corners = []
    for shape in shapes.values():
        lo, hi = shape.local_bbox()
        box = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        corners.append(shape.pose.to_lps(box))
    corners = np.concatenate(corners)
    z_lo, z_hi = corners[:, 2].min() - FOV_MARGIN_MM, corners[:, 2].max() + FOV_MARGIN_MM
    axis, t = soft.axis, soft.torso
    posterior = np.stack([axis.tangents[:, 1], -axis.tangents[:, 0]], axis=1)
    ys = []
    lines_v = (t["vc"] + t["v"], t["vc"] - t["v"])  # posterior and anterior skin lines in the sagittal plane
    x_half = t["x"] + 5
    if config.field_of_view == "spine":
        p = soft.node_params
        lines_v = (
            max(q["erector_spinae_v"] + q["erector_spinae_rv"] for q in p) + 8,
            min(q["psoas_v"] - q["psoas_rv"] for q in p) - 8,
        )
        x_half = max(max(q[f"{g}_x"] + q[f"{g}_rx"] for q in p) for g in ("psoas", "erector_spinae")) + 8
    for v in lines_v:
        line = axis.points + v * posterior
        keep = (line[:, 1] >= z_lo) & (line[:, 1] <= z_hi)
        ys.append(line[keep, 0])
    ys = np.concatenate(ys)
    y_lo, y_hi = min(ys.min(), corners[:, 1].min()) - 5, max(ys.max(), corners[:, 1].max()) + 5
    box = np.array([[x, y, z] for x in (-x_half, x_half) for y in (y_lo, y_hi) for z in (z_lo, z_hi)])
    direction = _direction(config)
    spacing = tuple(float(s) for s in config.spacing)
    proj = box @ direction  # coordinates along the grid axes
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    n = np.ceil((hi - lo) / np.asarray(spacing)).astype(int) + 1
    origin = np.asarray(config.origin, dtype=float)
    centre = origin + direction @ (np.asarray(spacing) * (n - 1) / 2)
    offset = centre - direction @ ((lo + hi) / 2)
    if np.allclose(np.abs(direction[:, 0]), [1.0, 0.0, 0.0], atol=1e-9):
        # Put the mid-sagittal plane a quarter voxel off the voxel centres: left-right symmetric faces (lamina,
        # spinous process, pedicles) then lose and gain partial voxels on the two sides instead of both gaining
        # (or both losing) half a voxel, which biased the label volume of an unmoved phantom by up to -1.7 %.
        step = direction[0, 0] * spacing[0]
        offset[0] = origin[0] + step * (math.floor((offset[0] - origin[0]) / step) + 0.25)
    # lookup grid for the soft-tissue axis: canonical y-z of the whole field of view, with room for follow-up motion
    ext = np.array([[i, j, k] for i in (0, n[0] - 1) for j in (0, n[1] - 1) for k in (0, n[2] - 1)], dtype=float)
    fov = origin + (ext * np.asarray(spacing)) @ direction.T - offset
    centre_c = fov.mean(axis=0)
    radius = np.linalg.norm(fov - centre_c, axis=1).max() + 40.0  # covers any rotation of the field of view
    y_lo, y_hi = max(fov[:, 1].min() - 60, centre_c[1] - radius), min(fov[:, 1].max() + 60, centre_c[1] + radius)
    z_lo, z_hi = max(fov[:, 2].min() - 60, centre_c[2] - radius), min(fov[:, 2].max() + 60, centre_c[2] + radius)
    soft.axis.build_lookup((y_lo, y_hi), (z_lo, z_hi))
    return offset, (int(n[2]), int(n[1]), int(n[0])), spacing, origin, direction


def _lesions(config: PhantomConfig, shapes: dict, followup: FollowupSpec | None) -> list[dict]:
    """Attach lesion spheres to their bodies; refuse spheres that leave the trabecular interior."""
    out = []
    growth = followup.lesion_growth_mm if followup is not None else 0.0
    for index, spec in enumerate(config.lesions, start=1):
        level = VERTEBRA_NAMES[_parse(spec["level"])]
        shape = shapes[level]
        radius = float(spec["radius_mm"]) + growth
        centre = np.asarray(spec.get("offset_mm", (0.0, 0.1 * shape.depth, 0.0)), dtype=float)
        golden = np.pi * (3 - np.sqrt(5))
        k = np.arange(200)
        zz = 1 - 2 * (k + 0.5) / 200
        rr = np.sqrt(1 - zz**2)
        sphere = centre + radius * np.stack([rr * np.cos(golden * k), rr * np.sin(golden * k), zz], axis=1)
        if not shape.in_body(sphere, CORTEX_MM).all():
            raise InputError(
                f"lesion {spec} does not fit inside the trabecular bone of {level} "
                f"(body {shape.width:.0f} x {shape.depth:.0f} x {shape.height:.0f} mm); use a smaller radius_mm"
            )
        shape.lesions.append((centre, radius, spec["kind"]))
        out.append({"index": index, "level": level, "kind": spec["kind"], "radius_mm": radius, "centre_local": centre})
    return out


def _parse(name: str) -> int:
    from spinekit.labels import parse_level

    return parse_level(name)


def _blend(m1: np.ndarray, m2: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Rigid motion halfway between two motions (mean rotation; mean displacement of ``point``)."""
    rot = Rotation.from_matrix(np.stack([m1[:3, :3], m2[:3, :3]])).mean().as_matrix()
    target = ((m1[:3, :3] @ point + m1[:3, 3]) + (m2[:3, :3] @ point + m2[:3, 3])) / 2
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = target - rot @ point
    return out


def rasterize(model: Model, chunk_voxels: int = 1_500_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint tissue codes, spine labels and muscle labels on the model's grid (arrays in [k, j, i] order)."""
    nk, nj, ni = model.grid_shape
    tissue = np.zeros((nk, nj, ni), dtype=np.uint8)
    spine = np.zeros((nk, nj, ni), dtype=np.uint8)
    muscles = np.zeros((nk, nj, ni), dtype=np.uint8)
    step = max(1, chunk_voxels // (nj * ni))
    d = model.direction
    # Fast path: grid axis i along LPS x and no global motion -> the axis lookup depends on (k, j) only.
    separable = np.allclose(np.abs(d[:, 0]), [1, 0, 0], atol=1e-9) and np.array_equal(model.global_motion, np.eye(4))
    x_i = (model.origin[0] + d[0, 0] * np.arange(ni) * model.spacing[0] - model.offset[0]).astype(np.float32)
    for k0 in range(0, nk, step):
        k1 = min(nk, k0 + step)
        shape = (k1 - k0, nj, ni)
        if separable:
            kk = np.arange(k0, k1)[:, None] * model.spacing[2]
            jj = np.arange(nj)[None, :] * model.spacing[1]
            y = model.origin[1] + d[1, 1] * jj + d[1, 2] * kk - model.offset[1]
            z = model.origin[2] + d[2, 1] * jj + d[2, 2] * kk - model.offset[2]
            sigma, v = model.soft.axis.lookup(y.ravel(), z.ravel())
            t, m, canal = model.soft.evaluate_rows(x_i, sigma, v)
        else:
            t, m, canal = model.soft.evaluate_canonical(*_canonical_points(model, k0, k1))
        tissue[k0:k1] = t.reshape(shape)
        muscles[k0:k1] = m.reshape(shape)
        spine[k0:k1][canal.reshape(shape)] = CANAL
    for solid in [*model.ribs, *model.paint_order()]:  # ribs first: a vertebra keeps the rib head's contact
        lo_idx, hi_idx = _index_box(model, solid)
        if lo_idx is None:
            continue
        pts = _points(model, lo_idx, hi_idx)
        t = solid.tissue(pts).reshape(tuple(h - lo for lo, h in zip(lo_idx, hi_idx, strict=True)))
        sub = tuple(slice(lo, h) for lo, h in zip(lo_idx, hi_idx, strict=True))
        hit = t > 0
        tissue[sub][hit] = t[hit]
        if solid.label:
            spine[sub][hit] = solid.label
    muscles[(spine > 0) | (tissue < MUSCLE_BASE)] = 0
    return tissue, spine, muscles


def _canonical_points(model: Model, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical anatomy coordinates (x, y, z; float32, C order) of the voxel slabs k0..k1 of the whole grid.

    The same affine map as ``Model.to_canonical(_points(...))``, evaluated per component so no (N, 3) float64
    array is built (the follow-up's soft tissue, painted under the global motion, takes half the time).
    """
    nk, nj, ni = model.grid_shape
    g = model.global_motion
    rot = g[:3, :3].T  # canonical = R^T (lps - t) - offset
    base = rot @ (model.origin - g[:3, 3]) - model.offset
    steps = rot @ model.direction * np.asarray(model.spacing)  # columns: canonical step per i, j, k
    k = np.arange(k0, k1, dtype=np.float32)[:, None, None]
    j = np.arange(nj, dtype=np.float32)[None, :, None]
    i = np.arange(ni, dtype=np.float32)[None, None, :]
    return tuple(
        (np.float32(base[c]) + np.float32(steps[c, 0]) * i + np.float32(steps[c, 1]) * j + np.float32(steps[c, 2]) * k)
        .astype(np.float32)
        .ravel()
        for c in range(3)
    )


def _points(model: Model, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    """LPS centres of voxels [lo, hi) given in (k, j, i) order, flattened in C order."""
    k = np.arange(lo[0], hi[0]) * model.spacing[2]
    j = np.arange(lo[1], hi[1]) * model.spacing[1]
    i = np.arange(lo[2], hi[2]) * model.spacing[0]
    d = model.direction
    out = np.empty((len(k), len(j), len(i), 3))
    for c in range(3):
        out[..., c] = (
            model.origin[c] + d[c, 2] * k[:, None, None] + d[c, 1] * j[None, :, None] + d[c, 0] * i[None, None, :]
        )
    return out.reshape(-1, 3)


def _index_box(model: Model, solid) -> tuple:
    lo, hi = solid.local_bbox()
    box = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    lps = solid.pose.to_lps(box)
    ijk = ((lps - model.origin) @ model.direction) / np.asarray(model.spacing)
    nk, nj, ni = model.grid_shape
    size = np.array([ni, nj, nk])
    first = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, size)
    last = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, size)
    if np.any(last <= first):
        return None, None
    return (first[2], first[1], first[0]), (last[2], last[1], last[0])
