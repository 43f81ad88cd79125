"""Spinal canal cross-sectional area per level (label 60, with the cord 61 counted as canal)."""

from __future__ import annotations

import numpy as np

from spinekit import labels as lab
from spinekit.morphometry.context import SpineModel
from spinekit.morphometry.geometry import crop_mask
from spinekit.morphometry.heights import section_area
from spinekit.tables import Measurement, missing

METHOD = "canal (+cord) section on the level plane perpendicular to the local axis, 0.5 mm resampling"


def canal_measurements(model: SpineModel) -> list[Measurement]:
    """Canal area (mm^2) on every vertebral mid-height and mid-disc plane; NaN with reason without a canal label."""
    spine = model.spine
    mask = np.isin(spine.array, (lab.CANAL, lab.CORD))
    planes = model.planes()
    if not mask.any():
        return [
            missing(f"canal {p.name}", lab.CANAL, "canal_area", "mm2", METHOD, "no spinal canal label (60)")
            for p in planes
        ]
    crop = crop_mask(spine, mask)
    rows = []
    for plane in planes:
        area, _centre, at_edge = section_area(crop.volume, plane.centre, plane.normal, half_size_mm=40.0)
        name = f"canal {plane.name}"
        if area == 0:
            rows.append(missing(name, lab.CANAL, "canal_area", "mm2", METHOD, "canal label absent on this plane"))
        elif at_edge:
            rows.append(missing(name, lab.CANAL, "canal_area", "mm2", METHOD, "canal section wider than 80 mm"))
        else:
            rows.append(Measurement(name, lab.CANAL, "canal_area", area, "mm2", METHOD))
    return rows
