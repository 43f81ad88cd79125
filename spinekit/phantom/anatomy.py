"""Reference sizes of thoracic/lumbar vertebrae and discs, and the sagittal chain that stacks them.

Body sizes (endplate width W, depth D, middle height m, mm) are rounded from the cadaver
measurements of Panjabi et al. 1991 (Spine 16:888, thoracic, Tables 1-3) and Panjabi et al. 1992
(Spine 17:299, lumbar, Tables 1-3); canal and pedicle sizes from the same tables. Disc middle
heights are rounded to the lumbar radiographic norms of Frobin et al. 1997 (Clin Biomech 12 Suppl 1:S1),
~9 mm at L1/L2 rising to ~11.5 mm at L4/L5. Values are representative of an adult male and are design
values, not a population model; ``FEMALE_SCALE`` shrinks every length for a female phantom (an
assumption of ~7 % shorter lengths, ~14 % smaller endplate area, the order of the sex difference in
vertebral cross-sectional area reported by Gilsanz et al. 1994).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spinekit.labels import L6, SACRUM, T13, VERTEBRA_NAMES

FEMALE_SCALE = 0.93
#: Heights are measured at +-35 % of the depth from the endplate centre, i.e. at 15 % and 85 % of the depth
#: from the anterior edge, where Genant-type morphometry places its anterior and posterior points.
HEIGHT_OFFSET_FRACTION = 0.35

# name: (W, D, m) anchors; thoracic levels in between are interpolated linearly.
_BODY_ANCHORS = {
    "T1": (28.0, 16.0, 15.0),
    "T4": (29.0, 21.0, 17.0),
    "T8": (33.0, 26.0, 19.5),
    "T10": (38.0, 28.0, 21.5),
    "T11": (40.0, 29.0, 22.5),
    "T12": (42.0, 30.0, 24.0),
    "L1": (44.0, 32.0, 25.0),
    "L2": (46.0, 33.0, 26.0),
    "L3": (48.0, 34.0, 26.5),
    "L4": (50.0, 34.0, 26.5),
    "L5": (51.0, 35.0, 26.0),
}
# name: canal width, canal depth, pedicle width, pedicle height, transverse-process length, spinous length
_POSTERIOR_ANCHORS = {
    "T1": (17.0, 14.0, 6.0, 10.0, 18.0, 28.0),
    "T12": (18.0, 15.0, 7.0, 15.0, 12.0, 28.0),
    "L1": (22.0, 17.0, 7.5, 15.0, 15.0, 28.0),
    "L2": (23.0, 16.5, 8.0, 15.0, 20.0, 29.0),
    "L3": (23.5, 16.0, 9.5, 15.0, 24.0, 29.0),
    "L4": (24.0, 16.0, 11.0, 14.5, 20.0, 27.0),
    "L5": (25.0, 16.0, 13.0, 14.0, 16.0, 24.0),
}
#: Body wedge angles (deg, + = anterior taller) of the lumbar bodies: design values with the usual pattern of
#: slightly kyphotic upper lumbar bodies and a lordotic L5; the discs carry the rest of the lordosis.
_LUMBAR_BODY_WEDGE_DEG = {"L1": -2.0, "L2": -1.0, "L3": 0.0, "L4": 1.0, "L5": 3.0, "L6": 3.0}
_DISC_MIDDLE_MM = {
    "T12/L1": 7.0,
    "T12/T13": 7.0,
    "T13/L1": 7.0,
    "L1/L2": 9.0,
    "L2/L3": 10.0,
    "L3/L4": 11.0,
    "L4/L5": 11.5,
    "L5/S1": 11.0,
    "L5/L6": 11.5,
    "L6/S1": 11.0,
    "T11/T12": 6.5,
    "T10/T11": 6.0,
}
#: Sacral slope as a fraction of the L1-S1 lordosis: keeps L1 near horizontal (SS ~ 36 deg for LL 45 deg,
#: within the normal ranges of Vialle et al. 2005, J Bone Joint Surg Am 87:260).
SACRAL_SLOPE_FRACTION = 0.8
SACRUM_HEIGHT_MM = 50.0


def level_names(labels: list[int]) -> list[str]:
    return [VERTEBRA_NAMES[v] for v in labels]


def full_chain_labels(transitional: str | None) -> list[int]:
    """T1..S1 cranial to caudal, with T13 or L6 inserted when requested."""
    labels = list(range(8, 20)) + list(range(20, 25)) + [SACRUM]
    if transitional and transitional.upper() == "T13":
        labels.insert(labels.index(19) + 1, T13)
    if transitional and transitional.upper() == "L6":
        labels.insert(labels.index(24) + 1, L6)
    return labels


def _reference_name(name: str) -> str:
    return {"T13": "T12", "L6": "L5"}.get(name, name)


def _interp_anchor(anchors: dict, name: str) -> tuple[float, ...]:
    name = _reference_name(name)
    if name in anchors:
        return anchors[name]
    order = [VERTEBRA_NAMES[v] for v in range(8, 25)]
    index = order.index(name)
    known = [(order.index(k), v) for k, v in anchors.items() if k in order]
    known.sort()
    xs = [k for k, _ in known]
    return tuple(float(np.interp(index, xs, [v[i] for _, v in known])) for i in range(len(known[0][1])))


def body_dims(name: str) -> tuple[float, float, float]:
    """Endplate width, depth and middle height (mm) of a vertebral body."""
    return _interp_anchor(_BODY_ANCHORS, name)


def posterior_dims(name: str) -> dict[str, float]:
    """Canal and posterior-element sizes (mm)."""
    cw, cd, pw, ph, tl, sl = _interp_anchor(_POSTERIOR_ANCHORS, name)
    return {"cw": cw, "cd": cd, "pw": pw, "ph": ph, "tl": tl, "sl": sl, "lt": 6.0, "sw": 7.0, "tr": 4.5}


def disc_middle_height(name: str) -> float:
    if name in _DISC_MIDDLE_MM:
        return _DISC_MIDDLE_MM[name]
    upper = name.split("/")[0]
    index = int(upper[1:])  # thoracic T1/T2..T9/T10: 4.5 -> 5.8 mm
    return 4.5 + (index - 1) * (6.0 - 4.5) / 9.0


@dataclass
class Element:
    """One stacked element of the sagittal chain (vertebral body, disc or the sacrum top)."""

    kind: str  # "vertebra" | "disc" | "sacrum"
    name: str
    label: int
    width: float
    depth: float
    height: float  # middle height
    slope: float  # d(height)/d(anterior position); wedge angle = 2 atan(slope / 2)
    psi: float = 0.0  # angle of the superior axis from +S towards anterior (rad)
    centre_yz: np.ndarray = field(default_factory=lambda: np.zeros(2))
    posterior: dict = field(default_factory=dict)
    cup: float = 0.0  # biconcave endplate depression depth per endplate (mm)
    drop: float = 0.0  # fracture: superior endplate lowered by drop + drop_slope * anterior position (mm)
    drop_slope: float = 0.0

    @property
    def wedge_deg(self) -> float:
        return math.degrees(math.atan(self.slope / 2) + math.atan(self.slope / 2 - self.drop_slope))

    @property
    def body_centre_yz(self) -> np.ndarray:
        """Mid-height point of the body on its centre line (the frame origin unless the body is fractured)."""
        s = np.array([-math.sin(self.psi), math.cos(self.psi)])
        return self.centre_yz - self.drop / 2 * s

    def resting_drop(self) -> tuple[float, float]:
        """Lowering (drop, drop_slope) of the plane the element above rests on.

        The posterior column (facet joints, intact in AO type A compression fractures, Magerl et al. 1994,
        Eur Spine J 3:184) holds the spine above at the posterior wall: the next element rests on a plane through
        the lowered anterior endplate point and the posterior point lowered by at most 0 mm, so a crush tilts the
        spine above as a wedge of the same anterior loss does and the disc above takes up the posterior collapse
        (without this the neighbours' posterior elements would collide).
        """
        u = HEIGHT_OFFSET_FRACTION * self.depth
        front = self.drop + u * self.drop_slope
        back = min(self.drop - u * self.drop_slope, 0.0)
        return (front + back) / 2, (front - back) / (2 * u) if u > 0 else 0.0

    def heights(self) -> tuple[float, float, float]:
        """Planar anterior, middle, posterior heights at +-HEIGHT_OFFSET_FRACTION * depth (after any fracture)."""
        u = HEIGHT_OFFSET_FRACTION * self.depth
        return tuple(self.height + ua * self.slope - self.drop - ua * self.drop_slope for ua in (u, 0.0, -u))


def slope_from(anterior: float, posterior: float, depth: float) -> float:
    return (anterior - posterior) / (2 * HEIGHT_OFFSET_FRACTION * depth)


def slope_from_wedge(wedge_deg: float) -> float:
    return 2 * math.tan(math.radians(wedge_deg) / 2)


def build_chain(config, rng: np.random.Generator) -> list[Element]:
    """All elements T1..S1 (caudal first) with their sagittal poses; the sacrum top centre is at the origin.

    Lordosis is split into the fixed lumbar body wedges and disc wedges that grow caudally (weights 1.0-1.6);
    kyphosis (T4 superior to T12 inferior endplate) comes 65 % from body and 35 % from disc wedging, an
    assumption following Goh et al. 1999 (Clin Biomech), who found vertebral wedging the larger contributor.
    """
    scale = FEMALE_SCALE if config.sex == "female" else 1.0
    labels = full_chain_labels(config.transitional)
    names = level_names(labels)
    vertebrae = {}
    for name, label in zip(names, labels, strict=True):
        if label == SACRUM:
            continue
        factor = 1.0
        if config.variability > 0:
            factor = float(np.clip(1 + config.variability * rng.standard_normal(), 0.8, 1.2))
        w, d, m = (x * scale * factor for x in body_dims(name))
        post = {k: v * scale for k, v in posterior_dims(name).items()}
        vertebrae[name] = Element("vertebra", name, label, w, d, m, 0.0, posterior=post)
    w5, d5, _ = body_dims("L5")
    sacrum = Element(
        "sacrum",
        "S1",
        SACRUM,
        w5 * scale,
        d5 * scale,
        0.0,
        0.0,
        posterior={k: v * scale for k, v in posterior_dims("L5").items()},
    )
    discs = {}
    for upper, lower in zip(names[:-1], names[1:], strict=True):
        disc = f"{upper}/{lower}"
        m = (config.disc_heights_mm or {}).get(disc, disc_middle_height(disc) * scale)
        up = vertebrae[upper]
        low = vertebrae.get(lower, sacrum)
        discs[disc] = Element(
            "disc",
            disc,
            100 + up.label,
            0.96 * min(up.width, low.width),
            0.96 * min(up.depth, low.depth),
            float(m),
            0.0,
        )
    _set_wedges(config, names, vertebrae, discs)
    _apply_fracture(config.fracture, vertebrae)
    # Stack from the sacrum upwards.
    order = []
    for upper, lower in zip(names[:-1], names[1:], strict=True):
        order.append(vertebrae[upper])
        order.append(discs[f"{upper}/{lower}"])
    sacrum.psi = math.radians(SACRAL_SLOPE_FRACTION * config.lordosis_deg)
    plane = sacrum.psi
    contact = np.zeros(2)
    for element in reversed(order):
        # The element's frame is its intact frame (a fracture lowers the superior endplate within it).
        element.psi = plane - math.atan(element.slope / 2)
        s = np.array([-math.sin(element.psi), math.cos(element.psi)])
        element.centre_yz = contact + element.height / 2 * s
        drop, drop_slope = element.resting_drop()
        contact = element.centre_yz + (element.height / 2 - drop) * s
        plane = element.psi - math.atan(element.slope / 2 - drop_slope)
    return [sacrum, *reversed(order)]


def _set_wedges(config, names: list[str], vertebrae: dict, discs: dict) -> None:
    lumbar = [n for n in names if n.startswith("L")]
    for name in lumbar:
        vertebrae[name].slope = slope_from_wedge(_LUMBAR_BODY_WEDGE_DEG[name])
    lumbar_discs = [f"{u}/{lo}" for u, lo in zip(names[:-1], names[1:], strict=True) if u.startswith("L")]
    body_sum = sum(_LUMBAR_BODY_WEDGE_DEG[n] for n in lumbar)
    weights = np.linspace(1.0, 1.6, len(lumbar_discs))
    for disc, weight in zip(lumbar_discs, weights / weights.sum(), strict=True):
        discs[disc].slope = slope_from_wedge((config.lordosis_deg - body_sum) * weight)
    thoracic = [n for n in names if n.startswith("T") and n != "T13"]
    per_body = -0.65 * config.kyphosis_deg / 9
    per_disc = -0.35 * config.kyphosis_deg / 8
    for name in thoracic:
        vertebrae[name].slope = slope_from_wedge(per_body)
    for disc in discs:
        upper, lower = disc.split("/")
        if upper in thoracic and lower in thoracic:
            discs[disc].slope = slope_from_wedge(per_disc)


def _apply_fracture(fracture: dict | None, vertebrae: dict) -> None:
    """Lower the anterior (wedge), all (crush) or middle (biconcave) height by ``height_loss``."""
    if not fracture:
        return
    element = vertebrae[VERTEBRA_NAMES[_label_of(fracture["level"])]]
    apply_collapse(element, fracture["type"], float(fracture["height_loss"]))


def apply_collapse(element: Element, kind: str, loss: float) -> None:
    """Collapse a vertebral body by ``loss`` (fraction of its current heights), leaving its posterior elements.

    A compression fracture deforms the body only (AO type A, Magerl et al. 1994, Eur Spine J 3:184; Genant et
    al. 1993, J Bone Miner Res 8:1137 grade the loss of anterior, middle or posterior height): the inferior
    endplate and the frame stay, the superior endplate drops by ``loss`` x the anterior height at the anterior
    edge and not at all posteriorly (wedge) or by ``loss`` x the local height everywhere (crush); a biconcave
    fracture cups both endplates so the middle height drops by ``loss``. Heights are measured in the intact frame.
    """
    u = HEIGHT_OFFSET_FRACTION * element.depth
    anterior, middle, _ = element.heights()
    if kind == "wedge":  # extra drop: loss * anterior at ua = +u, 0 at ua = -u
        element.drop += loss * anterior / 2
        element.drop_slope += loss * anterior / (2 * u)
    elif kind == "crush":  # extra drop: loss * current height at every ua
        element.drop += loss * (element.height - element.drop)
        element.drop_slope += loss * (element.slope - element.drop_slope)
    elif kind == "biconcave":
        element.cup += loss * (middle - 2 * element.cup) / 2


def _label_of(name: str) -> int:
    from spinekit.labels import parse_level

    return parse_level(name)
