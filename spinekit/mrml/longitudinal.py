"""What ``spinekit register`` writes, as MRML nodes: one transform per vertebra in a folder, and the change table.

Transform direction (``spinekit/register/cli.py``, its README.txt): ``<level>_followup_to_baseline.tfm`` is an
ITK rigid transform mapping a BASELINE point (LPS mm) to the same point of the FOLLOW-UP scan, the ITK resampling
convention. Slicer reads ITK files as "transform from parent" (:func:`sitk_transform_file_to_node`), so the node's
"to parent" direction maps follow-up points onto baseline points: a follow-up volume (or markup) placed under a
level's node lies on the baseline at that level.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import slicer

from spinekit import labels as spine_labels
from spinekit.errors import InputError
from spinekit.mrml.commands import read_tidy_csv
from spinekit.mrml.folders import put_in_folder
from spinekit.mrml.tables import metrics_to_table_node
from spinekit.mrml.transforms import sitk_transform_file_to_node

logger = logging.getLogger(__name__)

#: File name pattern of the per-level transforms (spinekit.register.cli.write_outputs).
TRANSFORM_PATTERN = re.compile(r"^(?P<level>[A-Za-z0-9]+)_followup_to_baseline\.tfm$")


@dataclass
class RegistrationNodes:
    """Nodes made from one ``spinekit register`` output folder."""

    transforms: dict[str, slicer.vtkMRMLTransformNode] = field(default_factory=dict)  # level -> node, cranial first
    table: slicer.vtkMRMLTableNode | None = None
    folder_item: int = 0


def transform_files(out_dir: str | Path) -> dict[str, Path]:
    """{level: .tfm path} of a register output folder, cranial to caudal."""
    found = {}
    for path in Path(out_dir).glob("*_followup_to_baseline.tfm"):
        match = TRANSFORM_PATTERN.match(path.name)
        if match:
            found[match["level"]] = path
    order = {spine_labels.VERTEBRA_NAMES[v]: i for i, v in enumerate(spine_labels.CRANIOCAUDAL_ORDER)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], 999), item[0])))


def load_registration_outputs(
    out_dir: str | Path, scene: slicer.vtkMRMLScene, folder_name: str = "SpineRegister"
) -> RegistrationNodes:
    """Per-level transform nodes ("L4 follow-up to baseline") and the ``changes.csv`` table, in one SH folder.

    Raises:
        InputError: the folder holds neither transforms nor ``changes.csv``.
    """
    out_dir = Path(out_dir)
    files = transform_files(out_dir)
    changes = out_dir / "changes.csv"
    if not files and not changes.is_file():
        raise InputError(f"{out_dir} holds no *_followup_to_baseline.tfm and no changes.csv; run 'spinekit register'")
    nodes = RegistrationNodes()
    for level, path in files.items():
        nodes.transforms[level] = sitk_transform_file_to_node(path, scene, f"{level} follow-up to baseline")
    if changes.is_file():
        nodes.table = metrics_to_table_node(read_tidy_csv(changes), scene, "vertebra changes")
    else:
        logger.warning("%s has transforms but no changes.csv", out_dir)
    members = [*nodes.transforms.values(), *([nodes.table] if nodes.table is not None else [])]
    nodes.folder_item = put_in_folder(scene, members, folder_name)
    return nodes
