"""Vertebral body / posterior-element separation from the shape of the vertebra mask alone.

The spinal canal is the hole of the vertebral ring: in a section perpendicular to the vertebra's
axis through the pedicles, the body (anterior), the pedicles (lateral) and the laminae (posterior)
enclose the vertebral foramen, an enclosed background region 15-25 mm wide and 12-20 mm deep in
the thoracolumbar spine (Zhou et al. 2000, Eur Spine J 9:242, Table 1; Panjabi et al. 1991, Spine
16:888, Table 2). Its anterior boundary at the midline is the posterior wall of the vertebral
body, so the body is what lies anterior to the plane through that boundary. Sections are sampled in
physical space (LPS points mapped through the mask's geometry), so grid direction and spacing do
not matter.

The body/vertebra volume fraction checks the result: the body is about half of a vertebra's
bone volume (lumbar body ~45 x 35 x 27 mm, Zhou et al. 2000, Table 1; posterior elements of
similar volume). A fraction outside :data:`BODY_FRACTION_RANGE` marks a separation that kept
posterior elements or lost part of the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spinekit import labels as lab
from spinekit.io import Volume
from spinekit.morphometry.geometry import sample

#: Axial sections are taken this far (mm) above and below the vertebra centroid (pedicle height ~15 mm, body
#: height ~27 mm; Zhou et al. 2000, Table 1).
SECTION_RANGE_MM = 14.0
#: Distance (mm) between the axial sections.
SECTION_STEP_MM = 2.0
#: Half-size (mm) of each section (lumbar vertebra ~90 mm across the transverse processes; the canal lies within
#: 35 mm of the vertebra centroid).
SECTION_HALF_MM = 45.0
#: In-plane pixel (mm) of the sections.
SECTION_PIXEL_MM = 1.0
#: Smallest canal section (mm^2) accepted as the vertebral foramen (smallest thoracic foramen ~13 x 14 mm,
#: Panjabi et al. 1991, Table 2; half of it allows for partial rings at coarse spacing).
MIN_CANAL_AREA_MM2 = 40.0
#: Largest right-left offset (mm) of the canal centre from the vertebra centroid.
MAX_CANAL_LATERAL_MM = 15.0
#: Half-width (mm) of the midline strip of the canal whose anterior boundary defines the body's posterior wall.
MIDLINE_HALF_MM = 3.0
#: Plausible body / vertebra volume fractions by region (body about half the vertebra: Zhou et al. 2000,
#: Table 1 dimensions; thoracic and cervical arches are relatively larger).
BODY_FRACTION_RANGE: dict[str, tuple[float, float]] = {
    "lumbar": (0.45, 0.70),
    "thoracic": (0.35, 0.70),
    "cervical": (0.20, 0.70),
}
#: A mask deeper than this (mm) along the anterior axis holds posterior elements (lumbar body depth 25-50 mm,
#: Zhou et al. 2000, Table 1; thoracic 23-35 mm, Panjabi et al. 1991, Table 1; whole vertebrae 70-100 mm):
#: a shallower one is a body-only mask (e.g. TotalSegmentator's ``vertebrae_body``), never cut.
MAX_BODY_DEPTH_MM = 55.0
#: The same for cervical levels (body depth 15-18 mm, whole vertebra ~50 mm; Panjabi et al. 1991, Spine
#: 16:861, Table 1).
MAX_CERVICAL_BODY_DEPTH_MM = 35.0


def max_body_depth(label: int) -> float:
    """Deepest (mm) a body-only mask of this level can be along the anterior axis."""
    return MAX_CERVICAL_BODY_DEPTH_MM if region(label) == "cervical" else MAX_BODY_DEPTH_MM


@dataclass(frozen=True)
class Canal:
    """The vertebral foramen found as the hole of the vertebral ring."""

    centre_lps: np.ndarray  # mean position of the hole pixels of all ring sections
    wall_mm: float  # anterior boundary at the midline, mm along ``anterior`` from the vertebra centroid
    sections: int  # number of sections with a ring


def region(label: int) -> str:
    """Spine region of a VerSe label ("cervical", "thoracic", "lumbar", "sacral")."""
    if label in (lab.L6,) or 20 <= label <= 24:
        return "lumbar"
    if 8 <= label <= 19 or label == lab.T13:
        return "thoracic"
    if 1 <= label <= 7:
        return "cervical"
    return "sacral"


def fraction_flag(label: int, fraction: float) -> str:
    """Empty when the body/vertebra volume fraction is plausible for the level, else why not."""
    low, high = BODY_FRACTION_RANGE.get(region(label), (0.2, 0.8))
    if low <= fraction <= high:
        return ""
    return (
        f"body is {100 * fraction:.0f} % of the vertebra volume (plausible {100 * low:.0f}-{100 * high:.0f} %): "
        "body separation uncertain"
    )


def find_canal(
    mask: Volume, centroid: np.ndarray, superior: np.ndarray, anterior: np.ndarray, right: np.ndarray
) -> Canal | None:
    """The spinal canal of one vertebra as the enclosed hole of its axial sections, or None.

    Args:
        mask: the vertebra's mask (any grid, values 0/1; a crop is fine).
        centroid: whole-vertebra centroid (LPS mm).
        superior, anterior, right: approximate unit axes of the vertebra (within ~20 degrees).
    """
    heights = np.arange(-SECTION_RANGE_MM, SECTION_RANGE_MM + 1e-9, SECTION_STEP_MM)
    offsets = np.arange(-SECTION_HALF_MM, SECTION_HALF_MM + 1e-9, SECTION_PIXEL_MM)
    s, a, r = np.meshgrid(heights, offsets, offsets, indexing="ij")
    points = centroid + s[..., None] * superior + a[..., None] * anterior + r[..., None] * right
    values = sample(mask, points)
    inside = values >= 0.5
    hole_points, walls = [], []
    pixel_area = SECTION_PIXEL_MM**2
    for n in range(len(heights)):
        section = inside[n]
        if not section.any():
            continue
        holes = ndimage.binary_fill_holes(section) & ~section
        labelled, count = ndimage.label(holes)
        if count == 0:
            continue
        areas = np.bincount(labelled.ravel())[1:] * pixel_area
        best, best_area = 0, 0.0
        for index, area in enumerate(areas, start=1):
            if area < MIN_CANAL_AREA_MM2 or area <= best_area:
                continue
            rr = r[n][labelled == index]
            if abs(float(rr.mean())) > MAX_CANAL_LATERAL_MM:
                continue
            best, best_area = index, area
        if best == 0:
            continue
        hole = labelled == best
        centre_r = float(r[n][hole].mean())
        wall = _wall_crossing(hole, values[n], offsets, centre_r)
        if wall is None:
            continue
        walls.append(wall)
        hole_points.append(points[n][hole])
    if not walls:
        return None
    return Canal(np.concatenate(hole_points).mean(axis=0), float(np.median(walls)), len(walls))


def _wall_crossing(hole: np.ndarray, values: np.ndarray, offsets: np.ndarray, centre_r: float) -> float | None:
    """Anterior boundary (mm) of the hole near its midline: the 0.5 crossing of the interpolated mask.

    ``hole`` and ``values`` are indexed ``[anterior, right]`` over ``offsets``; the crossing between the
    hole's most anterior pixel and the next one of each column within :data:`MIDLINE_HALF_MM` of the
    hole's centre is interpolated linearly, and the columns' median is returned (sub-pixel, so that a
    1 mm section grid does not quantise the cut).
    """
    crossings = []
    for column in np.nonzero(np.abs(offsets - centre_r) <= MIDLINE_HALF_MM)[0]:
        rows = np.nonzero(hole[:, column])[0]
        if rows.size == 0 or rows[-1] + 1 >= len(offsets):
            continue
        last = int(rows[-1])
        v0, v1 = float(values[last, column]), float(values[last + 1, column])
        fraction = (0.5 - v0) / (v1 - v0) if v1 > v0 else 0.5
        crossings.append(offsets[last] + fraction * (offsets[last + 1] - offsets[last]))
    return float(np.median(crossings)) if crossings else None


def posterior_wall_cut(along: np.ndarray, wall_mm: float, voxel_volume: float, bin_mm: float) -> float:
    """The cut (mm along the anterior axis) at the body's posterior wall, starting from the canal's wall.

    Between the canal's anterior boundary and the body, the section holds only the pedicle roots: the cut
    steps anterior, bin by bin, while the section area stays within 10 % (of the rise to the body's peak)
    of the pedicle plateau behind the wall, so that pedicle stubs are not counted as body (as in
    :func:`spinekit.morphometry.frames.split_body`). At most :data:`MAX_WALL_STEP_MM` is stepped.
    """
    edges = np.arange(wall_mm - PLATEAU_MM, along.max() + bin_mm, bin_mm)
    if len(edges) < 3:
        return wall_mm
    counts, _ = np.histogram(along, edges)
    area = counts * voxel_volume / bin_mm
    centres = 0.5 * (edges[:-1] + edges[1:])
    behind = centres < wall_mm
    front = ~behind
    if not behind.any() or not front.any():
        return wall_mm
    plateau = float(np.median(area[behind]))
    peak = float(area[front].max())
    threshold = plateau + 0.1 * (peak - plateau)
    cut = wall_mm
    for index in np.nonzero(front)[0]:
        if area[index] > threshold or edges[index] - wall_mm >= MAX_WALL_STEP_MM:
            break
        cut = float(edges[index + 1])
    return cut


#: Depth (mm) behind the canal's wall whose section area is the pedicle plateau.
PLATEAU_MM = 5.0
#: Furthest (mm) the cut steps anterior of the canal's wall.
MAX_WALL_STEP_MM = 5.0
