"""The stage registry: what each stage of the cohort pipeline reads, runs and writes for one subject.

A stage is a function ``func(row, subject_dir) -> list[Path]``: ``row`` is the subject's manifest row (a dict
with absolute paths, missing values as None), ``subject_dir`` is ``OUT/subjects/<id>``; the stage writes its
files (each atomically) into ``subject_dir/<stage>/`` and returns them. The runner writes ``DONE.json`` after
it returns. Core stages import their package inside the function, so a stage whose code is absent fails
with "stage not available" for that stage only.

The runner accepts any mapping ``name -> Stage | callable``: tests and benchmarks inject cheap stages.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinekit.errors import InputError, LabelError, SpinekitError

StageFunc = Callable[[dict, Path], list[Path]]
InputsFunc = Callable[[dict, Path], list[Path]]


class StageUnavailableError(SpinekitError):
    """A stage's code (or its optional dependency) cannot be imported on this worker."""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    Attributes:
        name: folder name of its outputs and the name used on the command line.
        func: ``func(row, subject_dir) -> list[Path]``.
        requires: stages whose outputs it reads (run first when selected; else their outputs must exist).
        inputs: files whose size/mtime/hash decide whether a DONE marker is still valid.
        description: one line for ``--help``.
    """

    name: str
    func: StageFunc
    requires: tuple[str, ...] = ()
    inputs: InputsFunc | None = None
    description: str = ""
    tables: tuple[str, ...] = field(default=())

    def input_files(self, row: dict, subject_dir: Path) -> list[Path]:
        return self.inputs(row, subject_dir) if self.inputs is not None else image_inputs(row, subject_dir)


def stage_dir(subject_dir: Path, name: str) -> Path:
    return subject_dir / name


def _optional_path(row: dict, column: str) -> Path | None:
    value = row.get(column)
    return Path(value) if value else None


def spine_path(row: dict, subject_dir: Path) -> Path:
    """The subject's vertebra label map: the manifest's ``spine`` column, else the segment stage's output."""
    return _optional_path(row, "spine") or subject_dir / "segment" / "spine.nii.gz"


def muscles_path(row: dict, subject_dir: Path) -> Path | None:
    """The subject's muscle label map, when the manifest or the segment stage provides one."""
    given = _optional_path(row, "muscles")
    if given is not None:
        return given
    if row.get("spine"):
        return None
    produced = subject_dir / "segment" / "muscles.nii.gz"
    return produced


def image_inputs(row: dict, subject_dir: Path) -> list[Path]:
    return [Path(row["image"])]


def label_inputs(row: dict, subject_dir: Path) -> list[Path]:
    paths = [Path(row["image"]), spine_path(row, subject_dir)]
    muscles = muscles_path(row, subject_dir)
    if muscles is not None:
        paths.append(muscles)
    for column in ("fat", "water"):
        if row.get(column):
            paths.append(Path(row[column]))
    return paths


def import_stage_module(stage: str, module: str):
    """Import a stage's core module, turning an ImportError into "stage not available"."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise StageUnavailableError(
            f"stage '{stage}' is not available: {module} could not be imported ({exc}); install the missing "
            f"package or leave '{stage}' out of --stages"
        ) from None


def _read_image(row: dict):
    from spinekit.io import read_volume

    return read_volume(row["image"])


def read_spine(row: dict, subject_dir: Path, image=None):
    """Read the vertebra label map and refuse one without any vertebra (a scan with no spine)."""
    from spinekit import labels as lab
    from spinekit.io import read_labels

    path = spine_path(row, subject_dir)
    if not path.exists():
        raise InputError(
            f"no spine label map for subject {row['subject_id']}: {path} is missing; run the segment stage "
            "first (--stages segment,...) or give a 'spine' column in the manifest"
        )
    spine = read_labels(path, image=image)
    present = set(np.unique(spine.array).tolist())
    if not present & set(lab.VERTEBRA_NAMES):
        raise LabelError(
            f"no spine found for subject {row['subject_id']}: the label map {path.name} holds no vertebra label "
            f"(values present: {sorted(present)[:10]}). Check that the image shows the spine and that the labels "
            "use the VerSe numbering (spinekit import-seg converts other conventions)"
        )
    return spine


def _read_muscles(row: dict, subject_dir: Path, image):
    from spinekit.io import read_labels

    path = muscles_path(row, subject_dir)
    if path is None or not path.exists():
        return None
    return read_labels(path, image=image)


def _write_json(data: dict, path: Path) -> Path:
    from spinekit.cohort.markers import write_json_atomic

    return write_json_atomic(data, path)


def _one_thread() -> None:
    """One thread per worker process: Dask runs one task per worker, so torch must not oversubscribe cores."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


# --- stages ---------------------------------------------------------------------------------------------------


def qc_stage(row: dict, subject_dir: Path) -> list[Path]:
    """Image statistics for the acquisition-bias analysis (intensity percentiles, histogram, spacing, FOV)."""
    from spinekit.cohort.imagestats import image_statistics

    out = stage_dir(subject_dir, "qc")
    stats = image_statistics(Path(row["image"]))
    return [_write_json(stats, out / "imagestats.json")]


def segment_stage(row: dict, subject_dir: Path) -> list[Path]:
    """Segment vertebrae and muscles, or record that the manifest's precomputed label maps are used."""
    out = stage_dir(subject_dir, "segment")
    if row.get("spine"):
        info = {"source": "manifest", "spine": row["spine"], "muscles": row.get("muscles")}
        return [_write_json(info, out / "segment.json")]
    api = import_stage_module("segment", "spinekit.segment.api")
    from spinekit import labels as lab
    from spinekit.io import write_labels

    _one_thread()
    image = _read_image(row)
    modality = {"mri": "mr", "mr": "mr", "ct": "ct"}.get(str(row.get("modality") or "auto").lower(), "auto")
    result = api.segment_image(image, targets=("spine", "muscles"), modality=modality, device="cpu")
    present = set(np.unique(result.spine.array).tolist()) if result.spine is not None else set()
    if not present & set(lab.VERTEBRA_NAMES):
        raise LabelError(
            f"no spine found in {Path(row['image']).name}: segmentation produced no vertebra. Check that the scan "
            "covers the spine (field of view, modality) or give a precomputed 'spine' column"
        )
    written = [write_labels(result.spine, out / "spine.nii.gz")]
    if getattr(result, "muscles", None) is not None:
        written.append(write_labels(result.muscles, out / "muscles.nii.gz"))
    info = {
        "source": "network",
        "qc": getattr(result, "qc", {}),
        "timings": getattr(result, "timings", {}),
        "model_versions": getattr(result, "model_versions", {}),
    }
    written.append(_write_json(info, out / "segment.json"))
    return written


def measure_stage(row: dict, subject_dir: Path) -> list[Path]:
    """Morphometry (heights, areas, centroids, curvature, muscle fat) as a tidy metrics.csv."""
    measure = import_stage_module("measure", "spinekit.morphometry.measure")
    from spinekit.io import read_volume
    from spinekit.tables import write_table

    image = _read_image(row)
    spine = read_spine(row, subject_dir, image)
    muscles = _read_muscles(row, subject_dir, image)
    fat = read_volume(row["fat"]) if row.get("fat") else None
    water = read_volume(row["water"]) if row.get("water") else None
    frame = measure.measure_subject(
        spine, image=image, muscles=muscles, fat=fat, water=water, subject=str(row["subject_id"])
    )
    return [write_table(frame, stage_dir(subject_dir, "measure") / "metrics.csv")]


def register_inputs(row: dict, subject_dir: Path) -> list[Path]:
    paths = label_inputs(row, subject_dir)
    if row.get("followup"):
        paths.append(Path(row["followup"]))
    return paths


def register_stage(row: dict, subject_dir: Path) -> list[Path]:
    """Per-vertebra registration of the follow-up scan to baseline; a subject without follow-up is skipped."""
    out = stage_dir(subject_dir, "register")
    if not row.get("followup"):
        return [_write_json({"status": "not applicable", "reason": "no followup column for this subject"},
                            out / "register.json")]  # fmt: skip
    from spinekit.cohort.adapters import run_register

    return run_register(row, subject_dir, spine_path(row, subject_dir), out)


def biomech_stage(row: dict, subject_dir: Path) -> list[Path]:
    """Subject-specific OpenSim model: loads.csv, strength.csv, risk.csv."""
    from spinekit.cohort.adapters import run_biomech

    return run_biomech(row, subject_dir, spine_path(row, subject_dir), stage_dir(subject_dir, "biomech"))


def volumes_stage(row: dict, subject_dir: Path) -> list[Path]:
    """Volume (mm³) of every labelled structure: a cheap, dependency-free QC table (volumes.csv).

    Volume = voxel count x voxel volume from the header spacing (physical units, any orientation).
    """
    from spinekit import labels as lab
    from spinekit.tables import Measurement, to_frame, write_table

    image = _read_image(row)
    spine = read_spine(row, subject_dir, image)
    muscles = _read_muscles(row, subject_dir, image)
    rows = []
    for volume, kind in ((spine, "spine"), (muscles, "muscles")):
        if volume is None:
            continue
        values, counts = np.unique(volume.array, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            if value == 0:
                continue
            name = _structure_name(lab, int(value), kind)
            rows.append(
                Measurement(
                    name, int(value), "volume", count * volume.voxel_volume_mm3, "mm3", "voxel count x voxel volume"
                )
            )
    frame = to_frame(rows, subject=str(row["subject_id"]))
    return [write_table(frame, stage_dir(subject_dir, "volumes") / "volumes.csv")]


def _structure_name(lab, value: int, kind: str) -> str:
    if kind == "spine":
        if value in lab.VERTEBRA_NAMES:
            return lab.VERTEBRA_NAMES[value]
        if value > lab.DISC_OFFSET and value - lab.DISC_OFFSET in lab.VERTEBRA_NAMES:
            return f"disc_{lab.VERTEBRA_NAMES[value - lab.DISC_OFFSET]}"
        return {lab.CANAL: "canal", lab.CORD: "cord"}.get(value, f"label_{value}")
    names = getattr(lab, "MUSCLE_NAMES", {})
    return str(names.get(value, f"muscle_{value}"))


def _segment_inputs(row: dict, subject_dir: Path) -> list[Path]:
    if row.get("spine"):
        return [Path(p) for p in (row.get("spine"), row.get("muscles")) if p]
    return image_inputs(row, subject_dir)


#: The built-in stages, in pipeline order.
STAGES: dict[str, Stage] = {
    "qc": Stage("qc", qc_stage, (), image_inputs, "image statistics for acquisition-bias detection"),
    "segment": Stage(
        "segment", segment_stage, (), _segment_inputs, "vertebrae, discs, canal and muscles (or manifest labels)"
    ),
    "measure": Stage("measure", measure_stage, ("segment",), label_inputs, "morphometry -> metrics.csv"),
    "register": Stage("register", register_stage, ("segment",), register_inputs, "follow-up registration"),
    "biomech": Stage("biomech", biomech_stage, ("segment",), label_inputs, "OpenSim loads, strength, risk"),
    "volumes": Stage("volumes", volumes_stage, ("segment",), label_inputs, "structure volumes -> volumes.csv"),
}
DEFAULT_STAGES = ("segment", "measure", "register", "biomech")


def as_stage(name: str, obj: Stage | StageFunc) -> Stage:
    """A :class:`Stage` from a Stage or a bare callable (which inherits the built-in stage's dependencies)."""
    if isinstance(obj, Stage):
        return obj
    builtin = STAGES.get(name)
    if builtin is not None:
        return Stage(name, obj, builtin.requires, builtin.inputs, builtin.description)
    return Stage(name, obj, (), None, "")


def resolve_stages(
    names: list[str] | tuple[str, ...], registry: Mapping[str, Stage | StageFunc] | None = None
) -> list[Stage]:
    """The selected stages in dependency order; unknown names raise InputError."""
    registry = dict(STAGES) if registry is None else dict(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise InputError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(registry)}")
    stages = {n: as_stage(n, registry[n]) for n in names}
    ordered: list[Stage] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if any(s.name == name for s in ordered) or name not in stages:
            return
        if name in visiting:
            raise InputError(f"stage dependencies form a cycle through '{name}'")
        visiting.add(name)
        for dep in stages[name].requires:
            visit(dep)
        ordered.append(stages[name])

    for name in names:
        visit(name)
    return ordered


def stage_summary(path: Path) -> dict:
    """Read a stage's JSON output (for reports)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
