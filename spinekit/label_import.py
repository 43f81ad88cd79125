"""Convert label maps from other tools into our conventions (``spinekit import-seg``).

Sources and the tables used (label numbers read from each tool's own code):

- ``totalsegmentator``: TotalSegmentator v2 task "total" (``map_to_binary.py``): 25 sacrum, 26 S1, 27 L5 ... 31 L1,
  32 T12 ... 43 T1, 44 C7 ... 50 C1, 79 spinal cord, 86/87 autochthon L/R, 88/89 iliopsoas L/R, 92-103/104-115 ribs.
- ``totalsegmentator_mr``: task "total_mr" (v2.4+): 18 sacrum, 19 vertebrae (one class), 20 discs (one class),
  21 spinal cord, 44/45 autochthon L/R, 46/47 iliopsoas L/R.
- ``vertebrae_body``: task "vertebrae_body": 1 vertebral body, 2 intervertebral disc (no levels).
- ``verse``: VerSe 2019/2020 masks: already our vertebra numbering (1-28), no discs.
- ``spineps``: SPINEPS instance map: vertebrae in VerSe numbering, discs 100 + v, endplates 200 + v (merged
  into their vertebra); its semantic map numbers cord 60 and canal 61, which we swap (ours: canal 60, cord 61).

Single-class vertebrae/discs (total_mr, vertebrae_body) carry no level. They get levels from a second,
levelled map of the same scan (``levels_from``, e.g. TotalSegmentator "total"): each body takes the level
of the vertebra it overlaps; each disc takes 100 + the level of the vertebra directly above it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from spinekit import labels as lb
from spinekit.errors import LabelError
from spinekit.io import Volume, check_label_grid, read_labels, write_labels

_TS_TOTAL_VERTEBRAE = {
    25: lb.SACRUM, 26: lb.SACRUM,
    **{27 + i: 24 - i for i in range(5)},  # 27 L5 -> 24 ... 31 L1 -> 20
    **{32 + i: 19 - i for i in range(12)},  # 32 T12 -> 19 ... 43 T1 -> 8
    **{44 + i: 7 - i for i in range(7)},  # 44 C7 -> 7 ... 50 C1 -> 1
}  # fmt: skip

#: source -> (spine table, muscle table); values are our labels.
SPINE_TABLES: dict[str, dict[int, int]] = {
    "totalsegmentator": {**_TS_TOTAL_VERTEBRAE, 79: lb.CORD},
    "totalsegmentator_mr": {18: lb.SACRUM, 21: lb.CORD},
    "vertebrae_body": {},
    "verse": {v: v for v in lb.VERTEBRA_NAMES},
    "spineps": {
        **{v: v for v in lb.VERTEBRA_NAMES},
        **{lb.DISC_OFFSET + v: lb.DISC_OFFSET + v for v in lb.VERTEBRA_NAMES if v != lb.SACRUM},
        **{200 + v: v for v in lb.VERTEBRA_NAMES},
    },
}
MUSCLE_TABLES: dict[str, dict[int, int]] = {
    "totalsegmentator": {
        86: lb.muscle_label("autochthon", "left"), 87: lb.muscle_label("autochthon", "right"),
        88: lb.muscle_label("psoas", "left"), 89: lb.muscle_label("psoas", "right"),
    },
    "totalsegmentator_mr": {
        44: lb.muscle_label("autochthon", "left"), 45: lb.muscle_label("autochthon", "right"),
        46: lb.muscle_label("psoas", "left"), 47: lb.muscle_label("psoas", "right"),
    },
}  # fmt: skip
#: Single-class (unlevelled) labels per source: (vertebrae value or None, disc value or None).
UNLEVELLED: dict[str, tuple[int | None, int | None]] = {
    "totalsegmentator_mr": (19, 20),
    "vertebrae_body": (1, 2),
}
#: TotalSegmentator "total" rib labels: left 92-103, right 104-115 (rib n at 91 + n / 103 + n).
TS_RIB_LABELS = {"left": range(92, 104), "right": range(104, 116)}
SOURCES = tuple(SPINE_TABLES)


@dataclass
class ConversionResult:
    """Our spine and muscle maps plus notes on what was mapped, levelled or dropped."""

    spine: Volume
    muscles: Volume | None
    notes: list[str] = field(default_factory=list)


def _remap(array: np.ndarray, table: dict[int, int]) -> np.ndarray:
    lookup = np.zeros(int(max(array.max(initial=0), max(table, default=0))) + 1, dtype=np.int16)
    for source, target in table.items():
        if source < lookup.size:
            lookup[source] = target
    return lookup[np.clip(array, 0, None)]


def _level_by_overlap(component: np.ndarray, levelled: np.ndarray) -> int:
    values, counts = np.unique(levelled[component], return_counts=True)
    keep = [(c, v) for v, c in zip(values, counts, strict=True) if lb.is_vertebra(int(v))]
    return int(max(keep)[1]) if keep else 0


def _superior_mm(volume: Volume, mask: np.ndarray) -> float:
    """LPS z (superior, mm) of a mask's centroid."""
    k, j, i = ndimage.center_of_mass(mask)
    return float(volume.index_to_lps(np.array([i, j, k]))[2])


def _assign_levels(spine: np.ndarray, labels: Volume, source: str, levelled: np.ndarray, notes: list[str]) -> None:
    """Give single-class vertebrae and discs the levels of a levelled map (in place).

    A disc takes 100 + the nearest levelled vertebra whose centroid is superior to the disc's centroid.
    """
    vertebra_value, disc_value = UNLEVELLED[source]
    array = labels.array
    components, n = ndimage.label(array == vertebra_value)
    for index in range(1, n + 1):
        component = components == index
        level = _level_by_overlap(component, levelled)
        if level:
            spine[component & (spine == 0)] = level
        else:
            notes.append(f"a vertebra component of {int(component.sum())} voxels overlaps no levelled vertebra")
    heights = {int(v): _superior_mm(labels, levelled == v) for v in np.unique(levelled) if lb.is_vertebra(int(v))}
    components, n = ndimage.label(array == disc_value)
    for index in range(1, n + 1):
        component = components == index
        z = _superior_mm(labels, component)
        above = {v: h - z for v, h in heights.items() if h > z}
        upper = min(above, key=above.get) if above else None
        if upper is not None and upper != lb.SACRUM:
            spine[component & (spine == 0)] = lb.disc_label(upper)
        else:
            notes.append(f"a disc component at z = {z:.1f} mm (LPS) has no levelled vertebra above it; left unlabelled")


def convert_labels(labels: Volume, source: str, levels_from: Volume | None = None) -> ConversionResult:
    """Convert a label map from ``source`` (one of :data:`SOURCES`) into our spine and muscle maps."""
    if source not in SPINE_TABLES:
        raise LabelError(f"unknown label source {source!r}; choose one of {', '.join(SOURCES)}")
    array = labels.array.astype(np.int32)
    notes: list[str] = []
    spine = _remap(array, SPINE_TABLES[source])
    muscles = _remap(array, MUSCLE_TABLES[source]) if source in MUSCLE_TABLES else None
    if source in UNLEVELLED:
        if levels_from is None:
            raise LabelError(
                f"{source} labels all vertebrae/discs as one class, so levels cannot be read from it; pass a levelled "
                "map of the same scan with --levels-from (e.g. TotalSegmentator 'total' output) or run spinekit segment"
            )
        check_label_grid(labels, levels_from)
        levelled = _remap(levels_from.array.astype(np.int32), SPINE_TABLES["totalsegmentator"])
        if not np.isin(levelled, list(lb.VERTEBRA_NAMES)).any():
            levelled = levels_from.array.astype(np.int32)  # already in our numbering (e.g. VerSe)
        _assign_levels(spine, labels, source, levelled, notes)
    if source == "spineps":
        merged = int(((array > 200) & (array < 300)).sum())
        if merged:
            notes.append(f"{merged} endplate voxels (200+v) merged into their vertebra")
    dropped = np.unique(array[(array > 0) & (spine == 0) & (muscles == 0 if muscles is not None else True)])
    if dropped.size:
        notes.append(f"labels not used by spinekit (other organs): {dropped.tolist()[:20]}")
    spine_volume = labels.with_array(np.ascontiguousarray(spine).astype(np.int16))
    muscle_volume = labels.with_array(muscles.astype(np.int16)) if muscles is not None else None
    return ConversionResult(spine_volume, muscle_volume, notes)


def convert_spineps_semantic(semantic: Volume) -> Volume:
    """Canal and cord from a SPINEPS semantic map (60 cord, 61 canal) into ours (60 canal, 61 cord)."""
    array = semantic.array.astype(np.int32)
    out = np.zeros(array.shape, np.int16)
    out[array == 61] = lb.CANAL
    out[array == 60] = lb.CORD
    return semantic.with_array(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("seg", type=Path, help="label map to convert (NIfTI/NRRD/MHA)")
    parser.add_argument("--from", dest="source", required=True, choices=[*SOURCES, "spineps_semantic"])
    parser.add_argument("--out", type=Path, required=True, help="output spine label map (.nii.gz)")
    parser.add_argument("--muscles-out", type=Path, help="output muscle label map (default: beside --out)")
    parser.add_argument("--levels-from", type=Path, help="levelled map of the same scan for single-class sources")


def run(args: argparse.Namespace) -> int:
    labels = read_labels(args.seg)
    if args.source == "spineps_semantic":
        written = [write_labels(convert_spineps_semantic(labels), args.out)]
        print(f"wrote {written[0]}")
        return 0
    levels_from = read_labels(args.levels_from) if args.levels_from else None
    result = convert_labels(labels, args.source, levels_from)
    write_labels(result.spine, args.out)
    print(f"wrote {args.out} (spine: labels {sorted(int(v) for v in np.unique(result.spine.array) if v)})")
    if result.muscles is not None and result.muscles.array.any():
        muscles_out = args.muscles_out or args.out.with_name(args.out.name.replace(".nii", "_muscles.nii"))
        write_labels(result.muscles, muscles_out)
        print(f"wrote {muscles_out} (muscles: labels {sorted(int(v) for v in np.unique(result.muscles.array) if v)})")
    for note in result.notes:
        print(f"note: {note}")
    return 0
