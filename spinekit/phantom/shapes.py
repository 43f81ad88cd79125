"""Solid shapes of the phantom in their own local frames: vertebra (body + posterior elements), disc, sacrum.

Local coordinates are (l, a, s): left, anterior, superior, in mm from the body centre. Every shape
answers ``tissue(points_lps)`` (0 outside) and lists its primitives with local bounding boxes, so
both the voxel painter and the ground-truth integrator evaluate exactly the same solids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Tissue codes of the tissue map (the image is a lookup of these; muscles are 20 + muscle label).
AIR, FAT, SOFT, CSF, ANNULUS, NUCLEUS, CORTICAL, TRABECULAR, POSTERIOR, LYTIC, BLASTIC = range(11)
MUSCLE_BASE = 20
#: Cortical shell thickness of the body (mm); vertebral cortex is 0.4-1 mm (Silva et al. 1994, Bone 15:409).
CORTEX_MM = 1.0
#: Superellipse exponents of the body footprint: rounder anteriorly, flat posterior wall.
N_ANTERIOR, N_POSTERIOR = 2.2, 4.0
#: Radius (fraction of the footprint) of a biconcave endplate depression; beyond it heights are unchanged.
#: Difference (mm) between spinous-process width at its base and at its tip (design value; see ``spinous``).
SPINOUS_TAPER_MM = 4.0
#: Caudal slope of the spinous process (tan ~6 deg; lumbar spinous processes point backwards and slightly down).
SPINOUS_SLOPE = 0.1
CUP_RADIUS = 0.6


def matmul(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``points @ matrix`` for (..., 3) x (3, 3) without BLAS threading overhead on tall arrays."""
    return np.einsum("...j,jk->...k", points, matrix)


@dataclass
class Pose:
    """Rigid placement: ``lps = origin + axes @ local``; columns of ``axes`` are l, a, s in LPS."""

    origin: np.ndarray
    axes: np.ndarray

    def to_local(self, lps: np.ndarray) -> np.ndarray:
        return matmul(np.asarray(lps, dtype=float) - self.origin, self.axes)

    def to_lps(self, local: np.ndarray) -> np.ndarray:
        return self.origin + matmul(np.asarray(local, dtype=float), self.axes.T)

    def moved(self, matrix: np.ndarray) -> Pose:
        """This pose after the rigid motion ``matrix`` (4x4, LPS)."""
        return Pose(matrix[:3, :3] @ self.origin + matrix[:3, 3], matrix[:3, :3] @ self.axes)


def superellipse(x: np.ndarray, y: np.ndarray, a, b) -> np.ndarray:
    """Inside the body footprint of half-width ``a``, half-depth ``b`` (scalars or arrays; y = anterior)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ax = np.abs(x) / np.where(a > 0, a, np.nan)
        ay = np.abs(y) / np.where(b > 0, b, np.nan)
    inside = (ax <= 1) & (ay <= 1)
    out = np.zeros(np.shape(inside), dtype=bool)
    yy = np.broadcast_to(y, inside.shape)
    ant = inside & (yy >= 0)
    post = inside & (yy < 0)
    out[ant] = ax[ant] ** N_ANTERIOR + ay[ant] ** N_ANTERIOR <= 1
    px, py = ax[post] ** 2, ay[post] ** 2
    out[post] = px * px + py * py <= 1  # N_POSTERIOR = 4
    return out


def footprint_area(a: float, b: float) -> float:
    """Exact area of the two half superellipses: 2ab Gamma(1+1/n)^2 / Gamma(1+2/n) each (Gridgeman 1970)."""
    return sum(2 * a * b * math.gamma(1 + 1 / n) ** 2 / math.gamma(1 + 2 / n) for n in (N_ANTERIOR, N_POSTERIOR))


@dataclass
class Primitive:
    name: str
    lo: np.ndarray
    hi: np.ndarray
    test: object  # callable(q) -> bool array


@dataclass
class VertebraShape:
    """A vertebra: superellipse body with planar (wedge) endplates, optional cups, and posterior elements."""

    name: str
    label: int
    width: float
    depth: float
    height: float
    slope: float
    posterior: dict
    pose: Pose
    cup_sup: float = 0.0
    cup_inf: float = 0.0
    reach_up: float = 4.0  # how far the superior facets rise above the superior endplate (mm)
    reach_down: float = 4.0
    lesions: list = field(default_factory=list)  # (centre_local (3,), radius, kind)
    drop: float = 0.0  # fracture: superior endplate lowered by drop + drop_slope * ua (posterior elements stay)
    drop_slope: float = 0.0

    # --- body surfaces -------------------------------------------------------------------------------
    def _half(self, ua):
        """Intact half-height; the posterior elements are sized and placed from it, fractured or not."""
        return self.height / 2 + ua * self.slope / 2

    @property
    def superior_tilt(self) -> float:
        """d(superior endplate height)/d(anterior position) in the local frame."""
        return self.slope / 2 - self.drop_slope

    @property
    def max_drop(self) -> float:
        """Largest lowering of the superior endplate over the footprint (mm; 0 for an intact body)."""
        return max(0.0, self.drop + self.depth / 2 * abs(self.drop_slope))

    @property
    def inferior_tilt(self) -> float:
        """d(inferior endplate height)/d(anterior position) in the local frame."""
        return -self.slope / 2

    def _cup(self, xl, ua, depth):
        if depth <= 0:
            return 0.0
        rho2 = (xl / (self.width / 2)) ** 2 + (ua / (self.depth / 2)) ** 2
        return depth * np.clip(1 - rho2 / CUP_RADIUS**2, 0, None)

    def sup_surface(self, xl, ua):
        return self._half(ua) - self.drop - ua * self.drop_slope - self._cup(xl, ua, self.cup_sup)

    def inf_surface(self, xl, ua):
        return -self._half(ua) + self._cup(xl, ua, self.cup_inf)

    def in_body(self, q, shrink: float = 0.0):
        xl, ua, us = q[:, 0], q[:, 1], q[:, 2]
        return (
            superellipse(xl, ua, self.width / 2 - shrink, self.depth / 2 - shrink)
            & (us <= self.sup_surface(xl, ua) - shrink)
            & (us >= self.inf_surface(xl, ua) + shrink)
        )

    # --- primitives ----------------------------------------------------------------------------------
    def primitives(self) -> list[Primitive]:
        p = self.posterior
        w2, d2, m = self.width / 2, self.depth / 2, self.height
        hmax = m / 2 + d2 * (abs(self.slope) / 2 + abs(self.drop_slope)) + 0.5
        back = -d2  # posterior wall
        xp = p["cw"] / 2 + p["pw"] / 2  # pedicle axis
        zp = 0.12 * m
        lam_lo, lam_hi = back - p["cd"] - p["lt"], back - p["cd"]
        zl, lh = 0.0, 0.8 * m
        zs, sh = -0.1 * m, 0.65 * m
        tp_a = back - 0.55 * p["cd"]
        xf = xp
        fr = 3.5
        sup_f = (xf + 4.5, back - p["cd"] - 1.0)
        inf_f = (xf - 4.5, back - p["cd"] - 4.0)
        top = self._half(back) + self.reach_up
        bottom = -self._half(back) - self.reach_down

        def ped(q):
            inside = (
                (((np.abs(q[:, 0]) - xp) / (p["pw"] / 2)) ** 2 + ((q[:, 2] - zp) / (p["ph"] / 2)) ** 2 <= 1)
                & (q[:, 1] >= back - p["cd"] - 1.0)
                & (q[:, 1] <= back + 3.0)
            )
            # the pedicle root merges into the body; above a collapsed endplate it must not stick out
            root = np.flatnonzero(inside & (q[:, 1] > back))
            if len(root):
                qr = q[root]
                in_print = superellipse(qr[:, 0], qr[:, 1], w2, d2)
                inside[root[in_print & ~self.in_body(qr)]] = False
            return inside

        def lamina(q):
            return (
                (np.abs(q[:, 0]) <= p["cw"] / 2 + p["pw"])
                & (q[:, 1] >= lam_lo)
                & (q[:, 1] <= lam_hi)
                & (np.abs(q[:, 2] - zl) <= lh / 2)
            )

        def spinous(q):
            # tapers from sw + 2 mm at the lamina to sw - 2 mm at the tip (mean width sw): its large flat sides are
            # then never parallel to a voxel grid whose axis is the left-right axis, which biased label volumes
            # and slopes caudally, so its upper and lower faces are not parallel to the grid either
            taper = SPINOUS_TAPER_MM * ((q[:, 1] - (lam_lo + 1)) / (p["sl"] + 1) + 0.5)
            return (
                (np.abs(q[:, 0]) <= (p["sw"] + taper) / 2)
                & (q[:, 1] >= lam_lo - p["sl"])
                & (q[:, 1] <= lam_lo + 1)
                & (np.abs(q[:, 2] - zs - SPINOUS_SLOPE * (q[:, 1] - lam_lo)) <= sh / 2)
            )

        def transverse(q):
            ax = np.abs(q[:, 0])
            return (ax >= xp) & (ax <= xp + p["tl"]) & ((q[:, 1] - tp_a) ** 2 + (q[:, 2] - zp) ** 2 <= p["tr"] ** 2)

        def facet_sup(q):
            return (
                ((np.abs(q[:, 0]) - sup_f[0]) ** 2 + (q[:, 1] - sup_f[1]) ** 2 <= fr**2)
                & (q[:, 2] >= zp)
                & (q[:, 2] <= top)
            )

        def facet_inf(q):
            return (
                ((np.abs(q[:, 0]) - inf_f[0]) ** 2 + (q[:, 1] - inf_f[1]) ** 2 <= fr**2)
                & (q[:, 2] <= 0)
                & (q[:, 2] >= bottom)
            )

        a = np.array
        lat = xp + p["tl"]
        return [
            Primitive("body", a([-w2, -d2, -hmax]), a([w2, d2, hmax]), self.in_body),
            Primitive(
                "pedicles",
                a([-xp - p["pw"] / 2, back - p["cd"] - 1, zp - p["ph"] / 2]),
                a([xp + p["pw"] / 2, back + 3, zp + p["ph"] / 2]),
                ped,
            ),
            Primitive(
                "lamina",
                a([-p["cw"] / 2 - p["pw"], lam_lo, zl - lh / 2]),
                a([p["cw"] / 2 + p["pw"], lam_hi, zl + lh / 2]),
                lamina,
            ),
            Primitive(
                "spinous",
                a([-(p["sw"] + SPINOUS_TAPER_MM / 2) / 2, lam_lo - p["sl"], zs - sh / 2 - SPINOUS_SLOPE * p["sl"]]),
                a([(p["sw"] + SPINOUS_TAPER_MM / 2) / 2, lam_lo + 1, zs + sh / 2 + SPINOUS_SLOPE]),
                spinous,
            ),
            Primitive(
                "transverse",
                a([-lat, tp_a - p["tr"], zp - p["tr"]]),
                a([lat, tp_a + p["tr"], zp + p["tr"]]),
                transverse,
            ),
            Primitive(
                "facet_sup", a([-sup_f[0] - fr, sup_f[1] - fr, zp]), a([sup_f[0] + fr, sup_f[1] + fr, top]), facet_sup
            ),
            Primitive(
                "facet_inf", a([-inf_f[0] - fr, inf_f[1] - fr, bottom]), a([inf_f[0] + fr, inf_f[1] + fr, 0]), facet_inf
            ),
        ]

    def local_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        prims = self.primitives()
        return np.min([p.lo for p in prims], axis=0), np.max([p.hi for p in prims], axis=0)

    def tissue_local(self, q: np.ndarray) -> np.ndarray:
        out = np.zeros(len(q), dtype=np.uint8)
        prims = self.primitives()
        for prim in prims[1:]:
            sel = _in_box(q, prim.lo, prim.hi)
            if sel.any():
                idx = np.flatnonzero(sel)
                out[idx[prim.test(q[idx])]] = POSTERIOR
        sel = np.flatnonzero(_in_box(q, prims[0].lo, prims[0].hi))
        if len(sel):
            qb = q[sel]
            body = self.in_body(qb)
            trab = body & self.in_body(qb, CORTEX_MM)
            tissue = np.where(trab, TRABECULAR, CORTICAL).astype(np.uint8)
            for centre, radius, kind in self.lesions:
                inside = np.sum((qb - centre) ** 2, axis=1) <= radius**2
                tissue[inside & body] = LYTIC if kind == "lytic" else BLASTIC
            out[sel[body]] = tissue[body]
        return out

    def tissue(self, lps: np.ndarray) -> np.ndarray:
        return self.tissue_local(self.pose.to_local(lps))


def _in_box(q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = (q[:, 0] >= lo[0]) & (q[:, 0] <= hi[0])
    for d in (1, 2):
        out &= (q[:, d] >= lo[d]) & (q[:, d] <= hi[d])
    return out


@dataclass
class SacrumShape:
    """The sacrum as a tapering block below the S1 superior endplate (local origin = endplate centre)."""

    name: str
    label: int
    width: float
    depth: float
    posterior: dict
    pose: Pose
    height: float = 50.0
    ala_width: float = 100.0
    cup_sup: float = 0.0

    def sup_surface(self, xl, ua):
        return np.zeros(np.shape(xl))

    def _inside(self, q, shrink: float = 0.0):
        xl, ua, us = q[:, 0], q[:, 1], q[:, 2]
        depth = -us
        p = self.posterior
        body = superellipse(xl, ua, self.width / 2 - shrink, self.depth / 2 - shrink) & (depth <= 4)
        frac = np.clip(depth / self.height, 0, 1)
        post = self.depth / 2 + p["cd"] + 10.0
        centre = (self.depth / 2 - post) / 2
        half_depth = (self.depth / 2 + post) / 2 * (1 - 0.3 * frac) - shrink
        half_width = self.ala_width / 2 * (1 - 0.5 * frac) - shrink
        block = (depth > 4) & superellipse(xl, ua - centre, half_width, half_depth)
        canal = (
            (xl / (0.8 * p["cw"] / 2)) ** 2 + ((ua + self.depth / 2 + p["cd"] / 2) / (0.8 * p["cd"] / 2)) ** 2
        ) <= 1
        return (body | (block & ~canal)) & (depth >= shrink) & (depth <= self.height - shrink)

    def local_bbox(self):
        post = self.depth / 2 + self.posterior["cd"] + 10.0
        return np.array([-self.ala_width / 2, -post, -self.height]), np.array([self.ala_width / 2, self.depth / 2, 0.0])

    def tissue(self, lps: np.ndarray) -> np.ndarray:
        q = self.pose.to_local(lps)
        inside = self._inside(q)
        trab = self._inside(q, CORTEX_MM)
        return np.where(inside, np.where(trab, TRABECULAR, CORTICAL), 0).astype(np.uint8)


@dataclass
class DiscShape:
    """A disc: its footprint in its own frame, bounded by the endplate surfaces of its two vertebrae."""

    name: str
    label: int
    width: float
    depth: float
    height: float
    slope: float
    pose: Pose
    lower: object  # VertebraShape | SacrumShape
    upper: VertebraShape

    def local_bbox(self):
        h = self.height / 2 + self.depth / 2 * abs(self.slope) / 2 + max(self.upper.cup_inf, self.lower.cup_sup) + 8
        below = h + getattr(self.lower, "max_drop", 0.0)  # a collapsed lower body leaves a taller gap to fill
        return np.array([-self.width / 2, -self.depth / 2, -below]), np.array([self.width / 2, self.depth / 2, h])

    def tissue(self, lps: np.ndarray) -> np.ndarray:
        q = self.pose.to_local(lps)
        lo, hi = self.local_bbox()
        cand = np.flatnonzero(_in_box(q, lo, hi) & superellipse(q[:, 0], q[:, 1], self.width / 2, self.depth / 2))
        out = np.zeros(len(q), dtype=np.uint8)
        if not len(cand):
            return out
        pts = np.asarray(lps)[cand]
        ql = self.lower.pose.to_local(pts)
        qu = self.upper.pose.to_local(pts)
        keep = (ql[:, 2] >= self.lower.sup_surface(ql[:, 0], ql[:, 1])) & (
            qu[:, 2] <= self.upper.inf_surface(qu[:, 0], qu[:, 1])
        )
        qd = q[cand]
        nucleus = superellipse(qd[:, 0], qd[:, 1], 0.55 * self.width / 2, 0.55 * self.depth / 2)
        out[cand[keep]] = np.where(nucleus[keep], NUCLEUS, ANNULUS)
        return out


#: Rib cross-section radius (mm): lower ribs are about 10 x 6 mm in section (Standring 2020, Gray's Anatomy).
RIB_RADIUS_MM = 4.0


@dataclass
class RibShape:
    """A rib of ``vertebra`` on one side (+1 left, -1 right): a tube along a polyline in the vertebra's frame.

    The path runs from the head at the posterolateral body wall, past the tip of the transverse process, to the
    angle, then forwards and down along the shaft (a short lower rib, about 120 mm; the 12th rib is 100-150 mm
    long, Standring 2020). Ribs carry no spine label: they are bone in the image only, as in a real scan. The
    pose is the vertebra's, so a follow-up motion moves the rib with it.
    """

    vertebra: VertebraShape
    side: int
    label: int = 0

    @property
    def pose(self) -> Pose:
        return self.vertebra.pose

    @property
    def name(self) -> str:
        return f"rib {self.vertebra.name} {'left' if self.side > 0 else 'right'}"

    def path(self) -> np.ndarray:
        """Polyline nodes (local l, a, s; mm) from the head to the shaft's end."""
        v, p = self.vertebra, self.vertebra.posterior
        back = -v.depth / 2
        xp = p["cw"] / 2 + p["pw"] / 2
        zp = 0.12 * v.height
        tip = xp + p["tl"]
        tp_a = back - 0.55 * p["cd"]
        nodes = [
            (v.width / 2 - 3.0, back + 5.0, zp),
            (tip - 2.0, tp_a + p["tr"] + RIB_RADIUS_MM, zp - 2.0),
            (tip + 25.0, tp_a - 5.0, zp - 15.0),
            (tip + 55.0, tp_a + 30.0, zp - 45.0),
        ]
        return np.array([(self.side * x, a, s) for x, a, s in nodes])

    def local_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        nodes = self.path()
        return nodes.min(axis=0) - RIB_RADIUS_MM, nodes.max(axis=0) + RIB_RADIUS_MM

    def tissue(self, lps: np.ndarray) -> np.ndarray:
        q = self.pose.to_local(lps)
        nodes = self.path()
        distance = np.full(len(q), np.inf)
        for start, end in zip(nodes[:-1], nodes[1:], strict=True):
            step = end - start
            t = np.clip((q - start) @ step / (step @ step), 0.0, 1.0)
            distance = np.minimum(distance, np.linalg.norm(q - start - t[:, None] * step, axis=1))
        out = np.where(distance <= RIB_RADIUS_MM - CORTEX_MM, TRABECULAR, CORTICAL)
        return np.where(distance <= RIB_RADIUS_MM, out, 0).astype(np.uint8)
