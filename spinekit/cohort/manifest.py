"""Read and validate a cohort manifest: every problem reported up front, the valid rows run.

A manifest is a CSV with one row per subject. Required columns: ``subject_id, image``. Optional:
``followup`` (follow-up image for the register stage) and ``followup_spine`` (its label map; segmented when absent),
``fat, water`` (Dixon images), ``spine, muscles``
(precomputed label maps: the segment stage then uses them instead of a network), ``sex, age, height_cm,
weight_kg`` (covariates for the report and the biomechanical model), ``modality`` (``ct``/``mri``/``auto``) and
``reference_<metric>`` or ``reference_<metric>@<structure>`` (reference values for Bland-Altman agreement).
Relative paths are resolved against the manifest's folder (the *root*); a path that escapes the root is
refused unless ``allow_outside_root`` is set, so a shared manifest cannot make workers read arbitrary files.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spinekit.errors import InputError

REQUIRED_COLUMNS = ("subject_id", "image")
#: columns that hold paths; ``image`` is required, the others optional.
PATH_COLUMNS = ("image", "followup", "fat", "water", "spine", "muscles", "followup_spine")
#: image-like columns whose header is checked up front.
IMAGE_COLUMNS = PATH_COLUMNS
NUMERIC_COLUMNS = ("age", "height_cm", "weight_kg")
COVARIATE_COLUMNS = ("sex", "age", "height_cm", "weight_kg")
REFERENCE_PREFIX = "reference_"
#: subject ids become folder names: letters, digits, dot, dash, underscore only.
SUBJECT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SEX_VALUES = {
    "f": "F", "female": "F", "w": "F", "weiblich": "F", "woman": "F", "2": "F",
    "m": "M", "male": "M", "männlich": "M", "maennlich": "M", "man": "M", "1": "M",
}  # fmt: skip


@dataclass(frozen=True)
class ManifestProblem:
    """One problem found in the manifest.

    Attributes:
        subject: subject id (may be empty when the id itself is the problem).
        row: 1-based data row in the CSV (header excluded).
        column: the offending column.
        reason: what is wrong and how to fix it.
        fatal: True when the subject is excluded from the run; False for a warning.
    """

    subject: str
    row: int
    column: str
    reason: str
    fatal: bool = True


@dataclass
class Manifest:
    """A validated manifest: the rows that run, and the problems found."""

    path: Path
    root: Path
    subjects: pd.DataFrame
    problems: list[ManifestProblem] = field(default_factory=list)

    @property
    def reference_columns(self) -> list[str]:
        return [c for c in self.subjects.columns if c.startswith(REFERENCE_PREFIX)]

    def rows(self) -> list[dict]:
        """Subjects as plain dicts (NaN and empty strings become None), ready to send to workers."""
        return [_clean_row(row) for row in self.subjects.to_dict(orient="records")]

    def problems_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"subject": p.subject, "row": p.row, "column": p.column, "reason": p.reason, "fatal": p.fatal}
                for p in self.problems
            ],
            columns=["subject", "row", "column", "reason", "fatal"],
        )


def _clean_row(row: dict) -> dict:
    clean = {}
    for key, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            clean[key] = None
        else:
            clean[key] = value
    return clean


def _is_within(path: Path, root: Path) -> bool:
    """True when ``path`` (absolute, normalized) lies inside ``root`` (symlinks are not followed)."""
    try:
        Path(os.path.normpath(path)).relative_to(os.path.normpath(root))
    except ValueError:
        return False
    return True


def check_image_header(path: Path) -> str:
    """Empty string when ``path`` is a readable 3D image header, else the reason it is not.

    Reads only the header (SimpleITK ``ReadImageInformation``), so validating 30,000 subjects takes
    seconds, not hours; a file whose voxel data is truncated is caught later by the stage that reads it.
    """
    import SimpleITK as sitk

    try:
        if path.is_dir():
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if not series:
                return f"{path} is a folder without a DICOM series"
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0])
            if len(files) < 2:
                return f"{path} holds a DICOM series of {len(files)} slice; a 3D volume needs several slices"
            return ""
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
    except RuntimeError as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else "unknown error"
        return f"{path.name} is not a readable image (NIfTI, NRRD, MHA or DICOM folder expected): {detail}"
    if reader.GetDimension() != 3:
        return f"{path.name} is a {reader.GetDimension()}D image; a 3D volume is needed"
    if reader.GetNumberOfComponents() != 1:
        return f"{path.name} has {reader.GetNumberOfComponents()} components per voxel; a scalar image is needed"
    return ""


def read_manifest(
    path: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    check_images: bool = True,
) -> Manifest:
    """Read a manifest CSV and validate every row.

    Args:
        path: the manifest CSV.
        root: folder that relative paths are resolved against and that paths must stay inside
            (default: the manifest's folder).
        allow_outside_root: accept paths outside ``root`` (e.g. absolute paths to a data store).
        check_images: read every image header up front (cheap; disable only for slow network storage).

    Returns:
        A :class:`Manifest` whose ``subjects`` hold only the runnable rows, paths made absolute.

    Raises:
        InputError: the file is missing, not a CSV, or lacks the required columns.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist; pass a CSV with columns subject_id,image")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest {path} is not a readable CSV ({exc}); save it as UTF-8 CSV") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"manifest {path.name} lacks the column(s) {', '.join(missing)}; it has {', '.join(frame.columns)}. "
            "The header must start with: subject_id,image"
        )
    root = Path(root).absolute() if root is not None else path.parent
    frame = frame.apply(lambda col: col.str.strip())
    problems: list[ManifestProblem] = []
    keep: list[int] = []
    first_row: dict[str, int] = {}
    for index, row in frame.iterrows():
        row_number = int(index) + 1
        subject = row["subject_id"]
        row_problems: list[ManifestProblem] = []
        if not subject:
            row_problems.append(ManifestProblem("", row_number, "subject_id", "empty subject_id"))
        elif not SUBJECT_ID_PATTERN.match(subject):
            row_problems.append(
                ManifestProblem(
                    subject,
                    row_number,
                    "subject_id",
                    f"subject_id {subject!r} has characters that are unsafe in a folder name; use letters, digits, "
                    "'.', '-' and '_' only",
                )
            )
        elif subject in first_row:
            row_problems.append(
                ManifestProblem(
                    subject,
                    row_number,
                    "subject_id",
                    f"duplicate subject_id {subject!r} (first on row {first_row[subject]}); this row is skipped: "
                    "give each scan its own id (e.g. append _followup)",
                )
            )
        else:
            first_row[subject] = row_number
        for column in PATH_COLUMNS:
            if column not in frame.columns:
                continue
            value = row[column]
            if not value:
                if column == "image":
                    row_problems.append(ManifestProblem(subject, row_number, column, "empty image path"))
                continue
            resolved = Path(value) if os.path.isabs(value) else root / value
            resolved = Path(os.path.normpath(resolved))
            if not allow_outside_root and not _is_within(resolved, root):
                row_problems.append(
                    ManifestProblem(
                        subject,
                        row_number,
                        column,
                        f"{column} path {value!r} escapes the manifest root {root}; keep data below the manifest's "
                        "folder, pass --root, or pass --allow-outside-root",
                    )
                )
                continue
            if not resolved.exists():
                row_problems.append(ManifestProblem(subject, row_number, column, f"{column} file {value!r} not found"))
                continue
            if check_images and column in IMAGE_COLUMNS:
                reason = check_image_header(resolved)
                if reason:
                    row_problems.append(ManifestProblem(subject, row_number, column, reason))
                    continue
            frame.at[index, column] = str(resolved)
        for column in NUMERIC_COLUMNS + tuple(c for c in frame.columns if c.startswith(REFERENCE_PREFIX)):
            if column in frame.columns and row[column]:
                try:
                    float(row[column])
                except ValueError:
                    row_problems.append(
                        ManifestProblem(
                            subject, row_number, column, f"{column} {row[column]!r} is not a number; ignored", False
                        )
                    )
                    frame.at[index, column] = ""
        if "sex" in frame.columns and row["sex"]:
            sex = _SEX_VALUES.get(row["sex"].lower())
            if sex is None:
                row_problems.append(
                    ManifestProblem(subject, row_number, "sex", f"sex {row['sex']!r} is not F or M; ignored", False)
                )
            frame.at[index, "sex"] = sex or ""
        problems.extend(row_problems)
        if not any(p.fatal for p in row_problems):
            keep.append(index)
    subjects = frame.loc[keep].reset_index(drop=True)
    for column in NUMERIC_COLUMNS + tuple(c for c in subjects.columns if c.startswith(REFERENCE_PREFIX)):
        if column in subjects.columns:
            subjects[column] = pd.to_numeric(subjects[column], errors="coerce")
    return Manifest(path=path, root=root, subjects=subjects, problems=problems)
