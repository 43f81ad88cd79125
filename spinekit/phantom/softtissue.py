"""Soft tissue along a smoothed spine axis: spinal canal, paraspinal muscles, fat and the body outline.

Cross-sections live in the normal planes of the *soft-tissue axis*: a curve through the centres of
bodies and discs (cubic Hermite, tangents = each element's superior axis), smoothed with a Gaussian of
``AXIS_SMOOTH_MM`` along its length so that its radius of curvature stays larger than the body's
posterior half-depth (normal planes never cross inside the body). A point has axis coordinates
(x = LPS left, sigma = arc length, v = posterior distance from the axis in the sagittal plane).

Muscle cross-sectional areas (male, mm^2) are design values in the range of healthy-adult MRI/CT studies:
psoas ~8 cm^2 at L1 rising to ~20 cm^2 at L4/L5, erector spinae ~20 cm^2, multifidus 4-9 cm^2 rising
caudally, quadratus lumborum ~5 cm^2. Fat fractions (psoas 4 %, quadratus lumborum 7 %, erector spinae
10 %, multifidus 14 %; +3 points in women) follow the order of the chemical-shift MRI values of healthy
volunteers in Crawford et al. 2016 (AJNR Am J Neuroradiol 37:742), where multifidus is fattier than
erector spinae and women fattier than men. Female areas are scaled by ``FEMALE_MUSCLE`` (assumption).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from spinekit.phantom.shapes import AIR, CSF, FAT, MUSCLE_BASE, SOFT

AXIS_SMOOTH_MM = 25.0
FEMALE_MUSCLE = 0.75
#: group -> (aspect rx/rv, left label, fat fraction male). Odd = left (LPS +x), even = right.
MUSCLE_SHAPES = {
    "psoas": (1.15, 1, 0.04),
    "quadratus_lumborum": (1.8, 3, 0.07),
    "multifidus": (0.75, 5, 0.14),
    "erector_spinae": (1.3, 7, 0.10),
}
#: Female fat fractions are higher by this amount (paraspinal fat fraction is higher in women, Crawford 2016).
FEMALE_FAT_EXTRA = 0.03
_AREA_MM2 = {  # level: psoas, QL, multifidus, erector spinae
    "T11": (0, 0, 300, 1700),
    "T12": (250, 100, 350, 1800),
    "T13": (500, 200, 380, 1900),
    "L1": (800, 300, 400, 2000),
    "L2": (1250, 450, 500, 2150),
    "L3": (1650, 550, 650, 2150),
    "L4": (1950, 550, 800, 1950),
    "L5": (2050, 300, 900, 1500),
    "L6": (2050, 250, 900, 1400),
}
SUBCUTANEOUS_FAT_MM = {"male": 18.0, "female": 25.0}


def muscle_areas(name: str) -> tuple[float, ...]:
    if name in _AREA_MM2:
        return _AREA_MM2[name]
    return (0, 0, 300, 1600)  # upper/mid thoracic


class SpineAxis:
    """Smoothed sagittal axis with a lookup grid giving (sigma, v) for any (y, z)."""

    def __init__(self, nodes_yz: np.ndarray, tangents_yz: np.ndarray, step: float = 0.25, extend: float = 400.0):
        pieces = [nodes_yz[0] - tangents_yz[0] * np.linspace(extend, 0, int(extend / step), endpoint=False)[:, None]]
        for i in range(len(nodes_yz) - 1):
            p0, p1 = nodes_yz[i], nodes_yz[i + 1]
            length = np.linalg.norm(p1 - p0)
            m0, m1 = tangents_yz[i] * length, tangents_yz[i + 1] * length
            t = np.linspace(0, 1, max(4, int(length / step)), endpoint=False)[:, None]
            h00, h10, h01, h11 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, -2 * t**3 + 3 * t**2, t**3 - t**2
            pieces.append(h00 * p0 + h10 * m0 + h01 * p1 + h11 * m1)
        pieces.append(nodes_yz[-1] + tangents_yz[-1] * np.linspace(0, extend, int(extend / step))[:, None])
        raw = np.concatenate(pieces)
        arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(raw, axis=0), axis=1))])
        uniform = np.arange(0, arc[-1], step)
        raw = np.stack([np.interp(uniform, arc, raw[:, k]) for k in range(2)], axis=1)
        smooth = ndimage.gaussian_filter1d(raw, AXIS_SMOOTH_MM / step, axis=0, mode="nearest")
        arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(smooth, axis=0), axis=1))])
        uniform = np.arange(0, arc[-1], step)
        self.points = np.stack([np.interp(uniform, arc, smooth[:, k]) for k in range(2)], axis=1)
        self.sigma = uniform
        grad = np.gradient(self.points, axis=0)
        self.tangents = grad / np.linalg.norm(grad, axis=1, keepdims=True)
        self._tree = cKDTree(self.points)
        self._grid = None

    def project(self, yz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arc length and posterior distance of points (N, 2) in the sagittal plane."""
        _, index = self._tree.query(yz)
        sigma = self.sigma[index]
        for _ in range(3):  # Newton-like refinement on the dense polyline
            p = np.stack([np.interp(sigma, self.sigma, self.points[:, k]) for k in range(2)], axis=1)
            t = np.stack([np.interp(sigma, self.sigma, self.tangents[:, k]) for k in range(2)], axis=1)
            t /= np.linalg.norm(t, axis=1, keepdims=True)
            d = yz - p
            sigma = sigma + np.sum(d * t, axis=1)
        p = np.stack([np.interp(sigma, self.sigma, self.points[:, k]) for k in range(2)], axis=1)
        t = np.stack([np.interp(sigma, self.sigma, self.tangents[:, k]) for k in range(2)], axis=1)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        d = yz - p
        v = d[:, 0] * t[:, 1] - d[:, 1] * t[:, 0]
        return sigma, v

    def at(self, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """Point and unit tangent (y, z) at arc length ``sigma``."""
        p = np.array([np.interp(sigma, self.sigma, self.points[:, k]) for k in range(2)])
        t = np.array([np.interp(sigma, self.sigma, self.tangents[:, k]) for k in range(2)])
        return p, t / np.linalg.norm(t)

    def build_lookup(self, y_range: tuple[float, float], z_range: tuple[float, float], step: float = 3.0) -> None:
        ys = np.arange(y_range[0], y_range[1] + step, step)
        zs = np.arange(z_range[0], z_range[1] + step, step)
        yy, zz = np.meshgrid(ys, zs, indexing="ij")
        sigma, v = self.project(np.stack([yy.ravel(), zz.ravel()], axis=1))
        self._grid = (
            ys[0],
            zs[0],
            step,
            sigma.reshape(yy.shape).astype(np.float32),
            v.reshape(yy.shape).astype(np.float32),
        )

    def lookup(self, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear interpolation of (sigma, v) at sagittal coordinates (clamped to the lookup grid)."""
        y0, z0, step, sigma, v = self._grid
        fy = np.clip((np.asarray(y, dtype=np.float32) - np.float32(y0)) / np.float32(step), 0, sigma.shape[0] - 1.001)
        fz = np.clip((np.asarray(z, dtype=np.float32) - np.float32(z0)) / np.float32(step), 0, sigma.shape[1] - 1.001)
        iy = fy.astype(np.int32)
        iz = fz.astype(np.int32)
        wy = fy - iy
        wz = fz - iz
        flat = iy * sigma.shape[1] + iz
        out = []
        for table in (sigma, v):
            tf = table.ravel()
            a, b = tf[flat], tf[flat + 1]
            c, d = tf[flat + sigma.shape[1]], tf[flat + sigma.shape[1] + 1]
            out.append((a + (b - a) * wz) * (1 - wy) + (c + (d - c) * wz) * wy)
        return out[0], out[1]


class SoftTissue:
    """Tables of canal, muscle and torso cross-sections along sigma, and their evaluation at points."""

    def __init__(self, axis: SpineAxis, nodes: list[dict], sex: str, sigma_cut: float, sigma_bottom: float):
        self.axis = axis
        self.sex = sex
        self.sigma_cut = sigma_cut  # muscles end at the S1 superior endplate
        self.sigma_bottom = sigma_bottom  # the canal ends at the sacrum's lower end
        sig = np.array([n["sigma"] for n in nodes])
        order = np.argsort(sig)
        nodes = [nodes[i] for i in order]
        sig = sig[order]
        self.d_sigma = 0.5
        self.sigma0 = sig[0] - 300.0
        grid = np.arange(self.sigma0, sig[-1] + 300.0, self.d_sigma)
        self.table = {}
        scale = FEMALE_MUSCLE if sex == "female" else 1.0
        self.node_params = []
        for n in nodes:
            params = _node_params(n, scale)
            self.node_params.append(params)
        keys = self.node_params[0].keys()
        for key in keys:
            values = np.array([p[key] for p in self.node_params], dtype=float)
            self.table[key] = np.interp(grid, sig, values).astype(np.float32)
        for group in MUSCLE_SHAPES:
            for part in ("rx", "rv"):
                col = self.table[f"{group}_{part}"]
                col[grid < sigma_cut] = 0
        self.grid = grid
        self.nodes = nodes
        fat_mm = SUBCUTANEOUS_FAT_MM[sex]
        v_post = max(p["erector_spinae_v"] + p["erector_spinae_rv"] for p in self.node_params) + fat_mm + 4.0
        v_ant = -(max(n["depth"] for n in nodes) / 2 + 110.0)
        self.torso = {
            "x": 165.0 * (0.92 if sex == "female" else 1.0),
            "vc": (v_post + v_ant) / 2,
            "v": (v_post - v_ant) / 2,
            "fat": fat_mm,
        }

    def fat_fraction(self, group: str) -> float:
        return MUSCLE_SHAPES[group][2] + (FEMALE_FAT_EXTRA if self.sex == "female" else 0.0)

    def _index(self, sigma):
        return np.clip(np.rint((sigma - self.sigma0) / self.d_sigma).astype(np.int64), 0, len(self.grid) - 1)

    def evaluate(self, canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tissue code, muscle label and canal mask at canonical (anatomy-frame) LPS points (N, 3)."""
        sigma, v = self.axis.lookup(canonical[:, 1], canonical[:, 2])
        return self.evaluate_axis(canonical[:, 0].astype(np.float32), sigma, v)

    def evaluate_canonical(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        """As :meth:`evaluate`, from the canonical coordinates as three 1D float32 arrays."""
        sigma, v = self.axis.lookup(y, z)
        return self.evaluate_axis(x, sigma, v)

    def evaluate_axis(self, x: np.ndarray, sigma: np.ndarray, v: np.ndarray):
        """As :meth:`evaluate`, from axis coordinates (x, sigma, v), 1D float32 arrays of equal length."""
        idx = self._index(sigma)
        t = self.torso
        ax = np.abs(x)
        a = ax / np.float32(t["x"])
        b = np.abs(v - np.float32(t["vc"])) / np.float32(t["v"])
        outer = a * a * a + b * b * b <= 1
        a = ax / np.float32(t["x"] - t["fat"])
        b = np.abs(v - np.float32(t["vc"])) / np.float32(t["v"] - t["fat"])
        inner = a * a * a + b * b * b <= 1
        tissue = np.zeros(len(x), dtype=np.uint8)
        tissue[outer] = FAT
        retro = v > -(self.table["depth"][idx] / 2 + 30.0)
        tissue[inner & ~retro] = SOFT
        muscle = np.zeros(len(x), dtype=np.uint8)
        near = np.flatnonzero(inner & (ax < 130) & (v > -80) & (v < 110) & (sigma >= self.sigma_cut))
        if len(near):
            i, xs, vs = idx[near], ax[near], v[near]
            for group, (_, left, _) in MUSCLE_SHAPES.items():
                rx, rv = self.table[f"{group}_rx"][i], self.table[f"{group}_rv"][i]
                ok = np.flatnonzero(rx > 0)
                if not len(ok):
                    continue
                du = (xs[ok] - self.table[f"{group}_x"][i[ok]]) / rx[ok]
                dv = (vs[ok] - self.table[f"{group}_v"][i[ok]]) / rv[ok]
                sel = near[ok[du * du + dv * dv <= 1]]
                muscle[sel] = np.where(x[sel] >= 0, left, left + 1)
            tissue[muscle > 0] = MUSCLE_BASE + muscle[muscle > 0]
        canal = np.zeros(len(x), dtype=bool)
        cand = np.flatnonzero((ax < 20) & (sigma >= self.sigma_bottom))
        if len(cand):
            i = idx[cand]
            dx, dv = x[cand], v[cand] - self.table["canal_v"][i]
            rx, rv = self.table["canal_rx"][i], self.table["canal_rv"][i]
            tissue[cand[(dx / (rx + 1)) ** 2 + (dv / (rv + 1)) ** 2 <= 1]] = FAT  # epidural fat
            canal[cand[(dx / rx) ** 2 + (dv / rv) ** 2 <= 1]] = True
            tissue[canal] = CSF
        return tissue, muscle, canal

    def evaluate_rows(self, x: np.ndarray, sigma: np.ndarray, v: np.ndarray):
        """Same decisions as :meth:`evaluate_axis` for rows of voxels that share (sigma, v) and differ in x.

        ``x`` has shape (ni,), ``sigma`` and ``v`` shape (R,); outputs have shape (R, ni). Each cross-section
        becomes an interval of |x| per row, so the cost per voxel is a few comparisons.
        """
        idx = self._index(sigma)
        t = self.torso
        ax = np.abs(x)[None, :]

        def half_width(semi_x, dv, power):
            inside = np.abs(dv) <= 1
            out = np.full(dv.shape, -1.0, dtype=np.float32)
            out[inside] = semi_x * (1 - np.abs(dv[inside]) ** power) ** (1 / power)
            return out

        outer = ax <= half_width(t["x"], (v - t["vc"]) / t["v"], 3)[:, None]
        inner = ax <= half_width(t["x"] - t["fat"], (v - t["vc"]) / (t["v"] - t["fat"]), 3)[:, None]
        retro = (v > -(self.table["depth"][idx] / 2 + 30.0))[:, None]
        tissue = np.where(outer, FAT, AIR).astype(np.uint8)
        tissue[inner & ~retro] = SOFT
        muscle = np.zeros(tissue.shape, dtype=np.uint8)
        rows = (v > -80) & (v < 110) & (sigma >= self.sigma_cut)
        left_side = (x >= 0)[None, :]
        for group, (_, left, _) in MUSCLE_SHAPES.items():
            rx, rv = self.table[f"{group}_rx"][idx], self.table[f"{group}_rv"][idx]
            ok = rows & (rx > 0)
            dv = np.where(ok, (v - self.table[f"{group}_v"][idx]) / np.where(rx > 0, rv, 1), 2.0)
            half = half_width(1.0, dv, 2) * rx
            xc = self.table[f"{group}_x"][idx]
            hit = inner & (ax < 130) & (np.abs(ax - xc[:, None]) <= half[:, None]) & (half[:, None] >= 0)
            muscle[hit] = np.broadcast_to(np.where(left_side, left, left + 1), hit.shape)[hit]
        tissue[muscle > 0] = MUSCLE_BASE + muscle[muscle > 0]
        rows = sigma >= self.sigma_bottom
        dv = v - self.table["canal_v"][idx]
        rx, rv = self.table["canal_rx"][idx], self.table["canal_rv"][idx]
        epi = half_width(1.0, np.where(rows, dv / (rv + 1), 2.0), 2) * (rx + 1)
        tissue[(ax < 20) & (ax <= epi[:, None])] = FAT
        lim = half_width(1.0, np.where(rows, dv / rv, 2.0), 2) * rx
        canal = (ax < 20) & (ax <= lim[:, None])
        tissue[canal] = CSF
        return tissue, muscle, canal


def _node_params(node: dict, scale: float) -> dict:
    """Cross-section centres and semi-axes (mm) of canal and muscles at one axis node."""
    w, d, p = node["width"], node["depth"], node["posterior"]
    out = {"depth": d, "canal_v": d / 2 + p["cd"] / 2, "canal_rx": p["cw"] / 2 - 1, "canal_rv": p["cd"] / 2 - 1}
    areas = dict(zip(MUSCLE_SHAPES, (a * scale for a in node["areas"]), strict=True))
    radii = {}
    for group, (k, _, _) in MUSCLE_SHAPES.items():
        area = areas[group]
        radii[group] = (math.sqrt(area * k / math.pi), math.sqrt(area / (k * math.pi)))
    tp_tip = p["cw"] / 2 + p["pw"] / 2 + p["tl"]
    rx, rv = radii["psoas"]
    out.update(psoas_x=w / 2 + 3 + rx, psoas_v=d / 2 + 1 - rv, psoas_rx=rx, psoas_rv=rv)
    rx, rv = radii["quadratus_lumborum"]
    out.update(
        quadratus_lumborum_x=tp_tip + 3 + rx,
        quadratus_lumborum_v=d / 2 + 2 + rv,
        quadratus_lumborum_rx=rx,
        quadratus_lumborum_rv=rv,
    )
    rx, rv = radii["multifidus"]
    mf_x = p["sw"] / 2 + 1.5 + rx
    out.update(multifidus_x=mf_x, multifidus_v=d / 2 + p["cd"] + p["lt"] + 3 + rv, multifidus_rx=rx, multifidus_rv=rv)
    front = max(d / 2 + 4 + 2 * radii["quadratus_lumborum"][1], d / 2 + 0.55 * p["cd"] + p["tr"] + 2)
    mf_rx = rx
    rx, rv = radii["erector_spinae"]
    out.update(
        erector_spinae_x=mf_x + mf_rx + 2 + rx, erector_spinae_v=front + rv, erector_spinae_rx=rx, erector_spinae_rv=rv
    )
    return out
