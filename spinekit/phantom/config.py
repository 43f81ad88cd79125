"""Configuration of the synthetic spine phantom (frozen dataclasses with justified defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from spinekit.errors import InputError
from spinekit.labels import parse_level, parse_level_range

MODALITIES = ("ct", "t1", "t2")
FRACTURE_TYPES = ("wedge", "crush", "biconcave")
LESION_KINDS = ("lytic", "blastic")
#: Default noise SD per modality: CT in HU (typical abdominal CT, ~10-15 HU), MRI in intensity units of a 0-1000 scale.
DEFAULT_NOISE_SD = {"ct": 12.0, "t1": 15.0, "t2": 15.0}


@dataclass(frozen=True)
class PhantomConfig:
    """What the phantom contains and how it is imaged.

    Attributes:
        modality: "ct" (Hounsfield units) or "t1"/"t2" (MRI-like intensities on a 0-1000 scale).
        seed: seed of the numpy Generator for noise, bias field and (with ``variability``) anatomy.
        levels: cranio-caudal range such as "T12-S1" (``spinekit.labels.parse_level_range``); S1 is the sacrum block.
        spacing: voxel size (mm) along the grid axes i, j, k.
        lordosis_deg: Cobb angle between the L1 and S1 superior endplates.
        kyphosis_deg: Cobb angle between the T4 superior and T12 inferior endplates.
        direction: 3x3 row-major direction cosines (columns = LPS directions of i, j, k); None = identity.
        origin: LPS position (mm) of voxel (0, 0, 0); the anatomy is centred in the field of view.
        noise_sd: noise standard deviation; None = ``DEFAULT_NOISE_SD[modality]``.
        blur_mm: Gaussian partial-volume blur (sigma, mm) applied before the noise.
        fracture: {"level": "L1", "type": "wedge"|"crush"|"biconcave", "height_loss": 0.3}.
        lesions: ({"level": "L3", "kind": "lytic"|"blastic", "radius_mm": 6, "offset_mm": [l, a, s]}, ...).
        transitional: "L6" or "T13" adds that vertebra (label 25 / 28) with its disc.
        bmd_mg_cm3: trabecular vBMD of every body (mapped to HU by ``contrast.hu_from_bmd``).
        sex: "male" or "female" (vertebral size, muscle area, subcutaneous fat).
        disc_heights_mm: middle-height overrides per disc, e.g. {"L2/L3": 10.0}.
        variability: relative SD of a per-level random size factor (0 = the reference anatomy for every seed).
        field_of_view: "torso" (whole body cross-section, as a CT) or "spine" (cropped to the spine and
            paraspinal muscles, as a spine MRI; also the fast choice for tests).
        rib_levels: vertebrae that carry a pair of ribs, e.g. ("T11", "T12"); ribs are bone in the image only
            (no spine label). () draws none; ("T11", "T12", "L1") makes a lumbar rib, ("T11",) 11 rib pairs.
    """

    modality: str = "ct"
    seed: int = 0
    levels: str = "T12-S1"
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    lordosis_deg: float = 45.0
    kyphosis_deg: float = 40.0
    direction: tuple[float, ...] | None = None
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noise_sd: float | None = None
    blur_mm: float = 0.6
    fracture: dict | None = None
    lesions: tuple[dict, ...] = ()
    transitional: str | None = None
    bmd_mg_cm3: float = 150.0
    sex: str = "male"
    disc_heights_mm: dict | None = None
    variability: float = 0.0
    field_of_view: str = "torso"
    rib_levels: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-serialisable form (tuples become lists)."""
        data = asdict(self)
        data["lesions"] = [dict(lesion) for lesion in self.lesions]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PhantomConfig:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("spacing", "origin", "direction"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(float(x) for x in kwargs[key])
        kwargs["lesions"] = tuple(dict(x) for x in kwargs.get("lesions", ()))
        kwargs["rib_levels"] = tuple(str(x) for x in kwargs.get("rib_levels", ()))
        return cls(**kwargs)


@dataclass(frozen=True)
class FollowupConfig:
    """A follow-up scan of a baseline phantom: known rigid motions, collapse and lesion growth.

    The whole patient moves by one global rigid motion (rotation about the anatomy centre up to
    ``max_rotation_deg``, translation up to ``max_translation_mm``); each vertebra adds its own small
    motion (up to ``per_level_rotation_deg`` / ``per_level_translation_mm``) about its body centre, the
    size of intersegmental motion between supine scans; facet tips keep ``model.FACET_CLEARANCE_MM`` from the
    neighbouring lamina, so neighbours do not collide for these bounds.

    Attributes:
        seed: seed of the motions and of the follow-up noise.
        max_rotation_deg: bound of the global rotation angle.
        max_translation_mm: bound of each component of the global translation.
        per_level_rotation_deg: bound of each vertebra's extra rotation angle.
        per_level_translation_mm: bound of each component of each vertebra's extra translation.
        collapse: {level: height_loss} new collapse at follow-up (e.g. {"L1": 0.3}): the body only; the
            posterior elements keep their shape and follow the level's rigid motion.
        collapse_type: "wedge", "crush" or "biconcave" for ``collapse``.
        lesion_growth_mm: added to the radius of every baseline lesion.
        modality: None = same as baseline.
    """

    seed: int = 1
    max_rotation_deg: float = 10.0
    max_translation_mm: float = 15.0
    per_level_rotation_deg: float = 1.5
    per_level_translation_mm: float = 1.0
    collapse: dict = field(default_factory=dict)
    collapse_type: str = "wedge"
    lesion_growth_mm: float = 0.0
    modality: str | None = None


def validate(config: PhantomConfig) -> list[int]:
    """Check a configuration and return the VerSe labels of its levels (cranial to caudal, incl. transitional)."""
    if config.modality not in MODALITIES:
        raise InputError(f"modality must be one of {MODALITIES}, not {config.modality!r}")
    if config.field_of_view not in ("torso", "spine"):
        raise InputError(f"field_of_view must be 'torso' or 'spine', not {config.field_of_view!r}")
    if config.sex not in ("male", "female"):
        raise InputError(f"sex must be 'male' or 'female', not {config.sex!r}")
    if len(config.spacing) != 3 or min(config.spacing) <= 0 or max(config.spacing) > 10:
        raise InputError(f"spacing must be three positive values up to 10 mm, not {config.spacing}")
    if config.direction is not None and len(config.direction) != 9:
        raise InputError("direction must hold 9 numbers (3x3 row-major) or be None")
    if not 0 <= config.bmd_mg_cm3 <= 400:
        raise InputError(f"bmd_mg_cm3 must lie in 0-400 mg/cm3, not {config.bmd_mg_cm3}")
    labels = parse_level_range(config.levels)
    if min(labels) < 8:
        raise InputError(f"levels {config.levels!r} include cervical vertebrae; the phantom models T1-S1 only")
    if config.transitional is not None:
        if config.transitional.upper() not in ("L6", "T13"):
            raise InputError(f"transitional must be 'L6' or 'T13', not {config.transitional!r}")
        extra = parse_level(config.transitional)
        if extra not in labels:
            before = 24 if extra == 25 else 19
            if before in labels and before != labels[-1]:
                labels.insert(labels.index(before) + 1, extra)
    if config.fracture is not None:
        check_fracture(config.fracture, labels)
    for level in config.rib_levels:
        if parse_level(level) not in labels or parse_level(level) == 26:
            raise InputError(f"rib level {level!r} is not a (non-sacral) vertebra of levels {config.levels!r}")
    for lesion in config.lesions:
        if lesion.get("kind") not in LESION_KINDS:
            raise InputError(f"lesion kind must be one of {LESION_KINDS}: {lesion}")
        if parse_level(lesion.get("level", "")) not in labels or parse_level(lesion["level"]) == 26:
            raise InputError(f"lesion level {lesion.get('level')!r} is not a vertebra of levels {config.levels!r}")
        if not 0 < float(lesion.get("radius_mm", 0)) <= 15:
            raise InputError(f"lesion radius_mm must lie in (0, 15] mm: {lesion}")
    return labels


def check_fracture(fracture: dict, labels: list[int]) -> None:
    """Raise InputError for a fracture specification the phantom cannot build."""
    if fracture.get("type") not in FRACTURE_TYPES:
        raise InputError(f"fracture type must be one of {FRACTURE_TYPES}: {fracture}")
    level = parse_level(str(fracture.get("level", "")))
    if level not in labels or level == 26:
        raise InputError(f"fracture level {fracture.get('level')!r} is not a (non-sacral) vertebra of the phantom")
    loss = float(fracture.get("height_loss", -1))
    if not 0 <= loss <= 0.6:
        raise InputError(f"fracture height_loss must be a fraction in [0, 0.6], not {loss}")
