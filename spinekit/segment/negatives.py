"""Non-spine training subjects: random limbs (one or two, with or without a joint) and heads, all background.

The issue asks that a knee, a head or noise comes back empty. Trained on spines alone, a network reads any muscle
ring as "paraspinal muscle" and any cortical tube as "vertebra", and longer training makes it more sure of it (the
seed-53 muscle stage of session 13 kept confident muscles on a synthetic knee CT). These label maps teach what is
NOT the target: bone, marrow, cartilage, muscle and fat arranged as a limb or a skull, every voxel background. Their
images are synthesised like every other source (random contrast, or Hounsfield units through the tissue table).

Sizes (mm) are drawn around adult anatomy (Standring 2020, Gray's Anatomy): thigh and leg radius 45-85 mm,
femoral/tibial shaft radius 10-18 mm with 3-7 mm cortex, condyles ~1.5-2x the shaft, knee joint space 3-8 mm;
skull 5-9 mm thick (diploe inside), head half-axes 70-100 mm, scalp 3-8 mm.
"""

from __future__ import annotations

import numpy as np

from spinekit.segment.dataset import LabelMap
from spinekit.segment.networks import TaskConfig
from spinekit.segment.synthesis import TISSUES

#: Generation labels of the non-spine maps (0 = air outside the body).
CORTICAL, TRABECULAR, MARROW, CARTILAGE, JOINT_FLUID, SUBCUT_FAT, SKIN, BRAIN, CSF, FASCIA_FAT = range(1, 11)
#: Muscle compartments get MUSCLE_FIRST, MUSCLE_FIRST + 1, ... (own intensities in random contrast).
MUSCLE_FIRST = 11
N_MUSCLE_LABELS = 6
_TISSUE_OF = {
    0: "air", CORTICAL: "cortical", TRABECULAR: "trabecular", MARROW: "fat", CARTILAGE: "cartilage",
    JOINT_FLUID: "fluid", SUBCUT_FAT: "fat", SKIN: "soft", BRAIN: "organ", CSF: "fluid", FASCIA_FAT: "fat",
}  # fmt: skip
#: Tissue class (index into ``synthesis.TISSUES``) of every generation label (muscle compartments: muscle), for the
#: Hounsfield-unit branch.
NON_SPINE_TISSUES = np.array(
    [TISSUES.index(_TISSUE_OF.get(label, "muscle")) for label in range(MUSCLE_FIRST + N_MUSCLE_LABELS)], dtype=np.int64
)
#: Sampling weight of one non-spine subject relative to one phantom (a design value). Next to 8 phantoms and 3 real
#: maps at weight 3, one subject is about one training sample in forty, four about one in ten. On the muscle network
#: one kept the synthetic knee out without costing Dixon multifidus; four cost it 0.05-0.1 (MODEL_CARD_muscles.md).
NEGATIVE_WEIGHT = 0.5
#: Bone labels (bright in the CT-like contrast branch).
BONE_LABELS = np.array([CORTICAL, TRABECULAR])


def limb_labels(rng: np.random.Generator, spacing_mm: float) -> np.ndarray:
    """One limb, or two side by side (both knees in one scan), along the k axis: long bones in a muscle ring."""
    n_limbs = 2 if rng.random() < 0.35 else 1
    radius = rng.uniform(45, 85)
    length = rng.uniform(150, 300)
    gap = rng.uniform(20, 80)
    width = n_limbs * 2 * radius + (n_limbs - 1) * gap + 20
    k, j, i = _grid((length, 2 * radius + 20, width), spacing_mm)
    labels = np.zeros(k.shape, dtype=np.int32)
    joint_at = rng.uniform(0.3, 0.7) * length if rng.random() < 0.7 else None
    n_bones = 2 if rng.random() < 0.4 else 1
    for limb in range(n_limbs):
        centre_i = 10 + radius + limb * (2 * radius + gap)
        _paint_limb(labels, k, j - (radius + 10), i - centre_i, radius, joint_at, n_bones, rng)
    return labels


def _paint_limb(labels, k, y, x, radius: float, joint_at: float | None, n_bones: int, rng) -> None:
    """Skin, subcutaneous fat, muscle compartments and bones of one limb centred on (x, y) = 0."""
    r = np.hypot(x, y)
    fat_mm = rng.uniform(3, 25)
    labels[r < radius] = SKIN
    labels[r < radius - 2] = SUBCUT_FAT
    inner = r < radius - 2 - fat_mm
    sectors = int(rng.integers(3, N_MUSCLE_LABELS + 1))
    angle = (np.arctan2(y, x) + rng.uniform(0, 2 * np.pi)) % (2 * np.pi)
    sector = np.minimum((angle / (2 * np.pi) * sectors).astype(int), sectors - 1)
    labels[inner] = MUSCLE_FIRST + sector[inner]
    boundary = np.abs((angle * sectors / (2 * np.pi)) % 1 - 0.5) > 0.47  # thin fat between compartments
    labels[inner & boundary] = FASCIA_FAT
    offsets = [(rng.uniform(-0.2, 0.2) * radius, rng.uniform(-0.2, 0.2) * radius)]
    if n_bones == 2:  # tibia and fibula, radius and ulna: a thin second bone to one side
        offsets.append((offsets[0][0] + rng.choice([-1, 1]) * 0.45 * radius, offsets[0][1] + 0.2 * radius))
    for index, (bx, by) in enumerate(offsets):
        shaft = rng.uniform(10, 18) * (0.5 if index else 1.0)
        _paint_bone(labels, k, np.hypot(x - bx, y - by), shaft, joint_at if index == 0 else None, rng)


def _paint_bone(labels, k, rb: np.ndarray, shaft: float, joint_at: float | None, rng) -> None:
    """A cortical tube with fatty marrow; near a joint the ends widen into trabecular condyles with cartilage."""
    cortex = rng.uniform(3, 7) if shaft > 8 else 2.0
    radius = np.full(k.shape, shaft)
    if joint_at is not None:
        half_gap = rng.uniform(1.5, 4.0)
        flare = rng.uniform(1.5, 2.0)
        distance = np.abs(k - joint_at)
        radius = shaft * (1 + (flare - 1) * np.clip(1 - (distance - half_gap) / 40.0, 0, 1))
        near = distance < 40 + half_gap
        labels[(rb < radius) & (distance < half_gap + 3)] = CARTILAGE
        labels[(rb < radius) & (distance < half_gap)] = JOINT_FLUID
        bone = (rb < radius) & (distance >= half_gap + 3)
        labels[bone] = CORTICAL
        core = (rb < radius - cortex) & (distance >= half_gap + 3 + 2)
        labels[core & near] = TRABECULAR
        labels[core & ~near] = MARROW
        return
    labels[rb < radius] = CORTICAL
    labels[rb < radius - cortex] = MARROW


def head_labels(rng: np.random.Generator, spacing_mm: float) -> np.ndarray:
    """A head: scalp, skull (cortical tables around diploe), CSF and brain, as nested ellipsoids."""
    half = np.array([rng.uniform(80, 100), rng.uniform(85, 105), rng.uniform(65, 80)])  # k (S-I), j (A-P), i (L-R)
    k, j, i = _grid(2 * half + 20, spacing_mm)
    centre = half + 10
    scalp, skull = rng.uniform(3, 8), rng.uniform(5, 9)
    labels = np.zeros(k.shape, dtype=np.int32)
    layers = ((0, SKIN), (2, SUBCUT_FAT), (scalp, CORTICAL), (scalp + 2, TRABECULAR), (scalp + skull - 2, CORTICAL))
    layers += ((scalp + skull, CSF), (scalp + skull + rng.uniform(2, 4), BRAIN))
    for depth, label in layers:
        axes = half - depth
        inside = ((k - centre[0]) / axes[0]) ** 2 + ((j - centre[1]) / axes[1]) ** 2 + ((i - centre[2]) / axes[2]) ** 2
        labels[inside < 1] = label
    return labels


def _grid(extent_mm, spacing_mm: float):
    """Voxel-centre coordinates (mm) of a box ``extent_mm`` (k, j, i) on the working grid."""
    shape = [max(int(round(e / spacing_mm)), 4) for e in extent_mm]
    return np.meshgrid(*[np.arange(n) * spacing_mm for n in shape], indexing="ij")


def non_spine_sources(config: TaskConfig, n: int, rng: np.random.Generator) -> list[LabelMap]:
    """``n`` non-spine subjects, all background: three limbs to every head (knees and legs are the commoner CT)."""
    sources = []
    for index in range(n):
        kind = "head" if index % 4 == 3 else "limb"
        generation = (head_labels if kind == "head" else limb_labels)(rng, config.spacing_mm)
        sources.append(
            LabelMap(
                f"negative_{kind}{index}", generation, np.zeros(generation.shape, dtype=np.int16),
                bright=BONE_LABELS, tissue_lut=NON_SPINE_TISSUES, sample_weight=NEGATIVE_WEIGHT,
            )
        )  # fmt: skip
    return sources
