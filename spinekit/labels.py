"""Label conventions: the one place where label numbers, names, colours and codes live.

Vertebrae follow VerSe/SPINEPS numbering (Löffler et al. 2020, Radiol Artif Intell 2:e190138):
C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25, sacrum/S1 = 26, T13 = 28.
The disc below vertebra v is 100 + v (L4/L5 = 123). Spinal canal = 60, cord = 61.
Muscles live in a separate map; groups are appended, never renumbered.

SNOMED-CT codes: vertebrae from DICOM CID 7603, disc levels from DICOM CID 1003.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinekit.errors import LabelError

CANAL = 60
CORD = 61
DISC_OFFSET = 100
#: Vertebrae and discs whose level cannot be inferred (no sacrum or counting landmark in view) are numbered
#: cranial to caudal from these offsets: vertebra 201, 202, ...; the disc below vertebra 200 + n is 300 + n.
UNKNOWN_VERTEBRA_OFFSET = 200
UNKNOWN_DISC_OFFSET = 300
MAX_UNKNOWN = 50
SACRUM = 26
L6 = 25
T13 = 28


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM triplet) for Slicer terminology and DICOM SEG."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class LabelInfo:
    """Name, colour and terminology of one label value."""

    value: int
    name: str
    color: tuple[int, int, int]
    code: Code
    category: Code


ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
TISSUE = Code("SCT", "85756007", "Tissue")
MUSCLE_CATEGORY = Code("SCT", "85756007", "Tissue")

#: VerSe numbering -> level name.
VERTEBRA_NAMES: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    **{19 + i: f"L{i}" for i in range(1, 6)},
    L6: "L6",
    SACRUM: "S1",
    T13: "T13",
}
VERTEBRA_LABELS: dict[str, int] = {name: value for value, name in VERTEBRA_NAMES.items()}
VERTEBRA_LABELS["sacrum"] = SACRUM

#: Anatomical order from cranial to caudal (T13 after T12, L6 after L5).
CRANIOCAUDAL_ORDER: tuple[int, ...] = (*range(1, 20), T13, *range(20, 25), L6, SACRUM)

_VERTEBRA_SCT = {
    1: "14806007", 2: "39976000", 3: "113205007", 4: "5329002", 5: "36978003", 6: "36054005", 7: "87391001",
    8: "64864005", 9: "53733008", 10: "1626008", 11: "73071006", 12: "56401006", 13: "45296009", 14: "62487009",
    15: "11068009", 16: "82687006", 17: "7610001", 18: "12989004", 19: "23215003",
    20: "66794005", 21: "14293000", 22: "36470004", 23: "11994002", 24: "49668003",
    26: "54735007",  # sacrum (bone structure of sacrum)
}  # fmt: skip
_DISC_LEVEL_SCT = {
    "C2/C3": "243902007", "C3/C4": "243903002", "C4/C5": "243904008", "C5/C6": "243905009", "C6/C7": "243906005",
    "C7/T1": "243925008", "T1/T2": "243908006", "T2/T3": "243909003", "T3/T4": "243910008", "T4/T5": "243911007",
    "T5/T6": "243912000", "T6/T7": "243913005", "T7/T8": "243914004", "T8/T9": "243915003", "T9/T10": "243916002",
    "T10/T11": "243917006", "T11/T12": "243918001", "T12/L1": "243926009", "L1/L2": "243920003",
    "L2/L3": "243921004", "L3/L4": "243922006", "L4/L5": "243923001", "L5/S1": "243927000",
}  # fmt: skip
VERTEBRA_GENERIC_SCT = Code("SCT", "51282000", "Vertebral column structure")
DISC_GENERIC_SCT = Code("SCT", "360499006", "Intervertebral disc structure")


def next_vertebra(value: int) -> int | None:
    """The vertebra caudal to ``value`` in a spine without transitional vertebrae (None after the sacrum).

    T13 is followed by L1 and L6 by the sacrum; pass the lower level to :func:`disc_name` when it is transitional.
    """
    order = [v for v in CRANIOCAUDAL_ORDER if v not in (T13, L6) or v == value]
    if value not in order:
        raise LabelError(f"{value} is not a vertebra label (VerSe numbering 1-26, 28)")
    index = order.index(value)
    return order[index + 1] if index + 1 < len(order) else None


def disc_label(upper_vertebra: int) -> int:
    """Disc label below ``upper_vertebra`` (100 + v)."""
    if upper_vertebra not in VERTEBRA_NAMES:
        raise LabelError(f"{upper_vertebra} is not a vertebra label (VerSe numbering 1-26, 28)")
    return DISC_OFFSET + upper_vertebra


def disc_name(upper_vertebra: int, lower_vertebra: int | None = None) -> str:
    """Name such as "L4/L5"; the lower level is the anatomical next one unless given."""
    lower = lower_vertebra if lower_vertebra is not None else next_vertebra(upper_vertebra)
    lower_name = "S1" if lower == SACRUM else VERTEBRA_NAMES.get(lower, "?") if lower else "?"
    return f"{VERTEBRA_NAMES[upper_vertebra]}/{lower_name}"


def is_unknown_vertebra(value: int) -> bool:
    return UNKNOWN_VERTEBRA_OFFSET < value <= UNKNOWN_VERTEBRA_OFFSET + MAX_UNKNOWN


def is_unknown_disc(value: int) -> bool:
    return UNKNOWN_DISC_OFFSET < value <= UNKNOWN_DISC_OFFSET + MAX_UNKNOWN


def vertebra_mask(array: np.ndarray, sacrum: bool = False) -> np.ndarray:
    """Voxels of vertebrae with a level (VerSe 1-25, 28) or of unknown level (201, 202, ...); the sacrum if asked."""
    levelled = (array >= 1) & (array <= T13) & (array != 27) & (sacrum | (array != SACRUM))
    return levelled | ((array > UNKNOWN_VERTEBRA_OFFSET) & (array <= UNKNOWN_VERTEBRA_OFFSET + MAX_UNKNOWN))


def disc_mask(array: np.ndarray) -> np.ndarray:
    """Voxels of discs with a level (101-128) or of unknown level (301, 302, ...)."""
    levelled = (array > DISC_OFFSET) & (array <= DISC_OFFSET + T13)
    return levelled | ((array > UNKNOWN_DISC_OFFSET) & (array <= UNKNOWN_DISC_OFFSET + MAX_UNKNOWN))


def is_vertebra(value: int) -> bool:
    return value in VERTEBRA_NAMES


def is_disc(value: int) -> bool:
    return value - DISC_OFFSET in VERTEBRA_NAMES and value - DISC_OFFSET != SACRUM


def _region_color(vertebra: int) -> tuple[int, int, int]:
    """Colours by region, alternating in brightness so neighbours are distinguishable."""
    bright = vertebra % 2 == 0
    if vertebra <= 7:
        return (241, 214, 145) if bright else (216, 186, 110)
    if vertebra <= 19 or vertebra == T13:
        return (177, 122, 101) if bright else (226, 202, 134)
    if vertebra == SACRUM:
        return (200, 200, 235)
    return (145, 60, 66) if bright else (250, 200, 120)


def spine_label_info(value: int) -> LabelInfo:
    """Name, colour and code of a label in the spine map (vertebra, disc, canal, cord)."""
    if is_vertebra(value):
        name = VERTEBRA_NAMES[value]
        sct = _VERTEBRA_SCT.get(value)
        code = Code("SCT", sct, f"{name} vertebra") if sct else VERTEBRA_GENERIC_SCT
        label_name = "sacrum" if value == SACRUM else name
        return LabelInfo(value, label_name, _region_color(value), code, ANATOMICAL_STRUCTURE)
    if is_disc(value):
        name = disc_name(value - DISC_OFFSET)
        sct = _DISC_LEVEL_SCT.get(name)
        code = Code("SCT", sct, f"Level of {name} intervertebral disc") if sct else DISC_GENERIC_SCT
        return LabelInfo(value, f"disc {name}", (90, 200, 255), code, ANATOMICAL_STRUCTURE)
    if is_unknown_vertebra(value):
        n = value - UNKNOWN_VERTEBRA_OFFSET
        return LabelInfo(value, f"vertebra ?{n}", (200, 200, 200), VERTEBRA_GENERIC_SCT, ANATOMICAL_STRUCTURE)
    if is_unknown_disc(value):
        n = value - UNKNOWN_DISC_OFFSET
        return LabelInfo(value, f"disc ?{n}/?{n + 1}", (150, 200, 230), DISC_GENERIC_SCT, ANATOMICAL_STRUCTURE)
    if value == CANAL:
        return LabelInfo(value, "spinal canal", (255, 255, 160), Code("SCT", "369278007", "Spinal canal"),
                         ANATOMICAL_STRUCTURE)  # fmt: skip
    if value == CORD:
        return LabelInfo(value, "spinal cord", (255, 230, 0), Code("SCT", "2748008", "Spinal cord"),
                         ANATOMICAL_STRUCTURE)  # fmt: skip
    raise LabelError(
        f"{value} is not a spine label (vertebrae 1-28, canal 60, cord 61, discs 101-128, "
        "unknown-level vertebrae 201-250 and discs 301-350)"
    )


@dataclass(frozen=True)
class MuscleGroup:
    """One muscle group of the muscle map, with its side."""

    value: int
    name: str
    group: str
    side: str
    color: tuple[int, int, int]
    code: Code


_MUSCLE_CODES = {
    "psoas": Code("SCT", "71915005", "Psoas major muscle"),
    "quadratus_lumborum": Code("SCT", "15573009", "Quadratus lumborum muscle"),
    "multifidus": Code("SCT", "5709001", "Multifidus muscles"),
    "erector_spinae": Code("SCT", "244848006", "Erector spinae muscle"),
    "autochthon": Code("SCT", "244848006", "Erector spinae muscle"),
}
_MUSCLE_COLORS = {
    "psoas": (200, 90, 80),
    "quadratus_lumborum": (230, 150, 60),
    "multifidus": (120, 70, 170),
    "erector_spinae": (70, 130, 200),
    "autochthon": (60, 160, 140),
}
#: Group order defines the numbering: psoas 1/2, QL 3/4, multifidus 5/6, erector spinae 7/8,
#: autochthon (erector spinae + transversospinalis, unsplit, as TotalSegmentator delivers it) 9/10.
MUSCLE_GROUPS: tuple[str, ...] = ("psoas", "quadratus_lumborum", "multifidus", "erector_spinae", "autochthon")


def _build_muscles() -> dict[int, MuscleGroup]:
    muscles = {}
    for index, group in enumerate(MUSCLE_GROUPS):
        for offset, side in enumerate(("left", "right")):
            value = 2 * index + 1 + offset
            muscles[value] = MuscleGroup(
                value, f"{group}_{side}", group, side, _MUSCLE_COLORS[group], _MUSCLE_CODES[group]
            )
    return muscles


MUSCLES: dict[int, MuscleGroup] = _build_muscles()
MUSCLE_LABELS: dict[str, int] = {m.name: m.value for m in MUSCLES.values()}


def muscle_label(group: str, side: str) -> int:
    """Label of ``group`` ("psoas", ...) on ``side`` ("left"/"right")."""
    key = f"{group}_{side}"
    if key not in MUSCLE_LABELS:
        raise LabelError(f"unknown muscle {key!r}; known: {sorted(MUSCLE_LABELS)}")
    return MUSCLE_LABELS[key]


def muscle_label_info(value: int) -> LabelInfo:
    if value not in MUSCLES:
        raise LabelError(f"{value} is not a muscle label; known: {sorted(MUSCLES)}")
    m = MUSCLES[value]
    return LabelInfo(value, m.name, m.color, m.code, MUSCLE_CATEGORY)


def label_info(value: int, kind: str = "spine") -> LabelInfo:
    """Label information from the spine map (``kind="spine"``) or the muscle map (``"muscles"``)."""
    if kind == "spine":
        return spine_label_info(value)
    if kind == "muscles":
        return muscle_label_info(value)
    raise LabelError(f"kind must be 'spine' or 'muscles', not {kind!r}")


def parse_level(name: str) -> int:
    """Level name ("L4", "T12", "S1", "sacrum") to its VerSe label."""
    key = name.strip()
    key = key.upper() if key.lower() != "sacrum" else "sacrum"
    if key not in VERTEBRA_LABELS:
        raise LabelError(f"unknown vertebral level {name!r}; use names like C7, T12, L4, L6, T13, S1")
    return VERTEBRA_LABELS[key]


def parse_level_range(text: str) -> list[int]:
    """ "T10-S1" to the VerSe labels in cranio-caudal order (T13/L6 only when named as an end)."""
    try:
        first, last = (part.strip() for part in text.split("-"))
    except ValueError:
        raise LabelError(f"level range {text!r} must look like 'T10-S1'") from None
    start, end = parse_level(first), parse_level(last)
    order = [v for v in CRANIOCAUDAL_ORDER if v not in (T13, L6) or v in (start, end)]
    if order.index(start) > order.index(end):
        raise LabelError(f"level range {text!r} runs caudal to cranial; write it cranial first (e.g. T10-S1)")
    return order[order.index(start) : order.index(end) + 1]
