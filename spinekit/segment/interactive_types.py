"""What an interactive-correction session is configured with and records: settings, click results, undo edits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinekit.segment.clicks import Click


@dataclass(frozen=True)
class InteractiveSettings:
    """Sizes and thresholds of the click response (millimetres, physical space).

    Attributes:
        max_radius_mm: largest influence radius of a click; also bounds the window (a vertebra with its posterior
            elements is about 50 x 80 x 35 mm, so a 45 mm radius covers most of it from any click).
        base_radius_mm: influence radius of a positive click next to the mask (the length of a vertebral body or
            of a muscle segment over one level, so one click repairs one level's worth of boundary).
        radius_per_mm: growth of the radius per mm of distance between the click and the current mask.
        new_radius_mm: radius of a click that creates a structure (about a vertebral body's half-width + cortex).
        shell_mm: a positive click adds voxels at most this much farther from the mask than the click itself. The
            simulated user clicks at the centre of the error region, so its distance to the mask is already about
            the error's half-thickness; one voxel at 3 mm on top of it repairs the region without spreading over
            the partial-volume band around intact boundaries (measured: 10 mm let one click on a 3 mm CT add the
            adjacent discs, Dice 0.80 -> 0.76).
        cortex_barrier: for vertebrae whose outer layer is brighter than their interior (a cortical shell), a
            positive click only adds voxels that the marrow reaches without crossing the cortex, or that are at
            least as bright as the marrow (see ``InteractiveSession._cortex_basin``).
        smooth_mm: Gaussian sigma of optional pre-smoothing. Off by default: at 1-3 mm spacing it spreads bright
            cortical bone (about 1000 HU) into the voxels around it, which then pass as bone.
        percentiles: robust intensity range of a structure (percentiles of its current voxels).
        seed_radius_mm: neighbourhood of a click used for its own intensity.
        new_structure_k: half-width (robust SDs) of the intensity range of a structure created by a click, as
            ITK's ConfidenceConnected multiplier (2.5 keeps 99 % of a Gaussian tissue).
        network_veto: class probability below which the network removes a candidate voxel.
        negative_k: robust SDs from the structure's median beyond which a click's intensity is "not this tissue".
        negative_core: a negative click first removes voxels within this fraction of the way from the click's
            intensity to the structure's, then the half-way band one voxel deep.
        min_voxels: fewer structure voxels than this in the window and the structure counts as new.
    """

    max_radius_mm: float = 45.0
    base_radius_mm: float = 30.0
    radius_per_mm: float = 2.0
    new_radius_mm: float = 20.0
    shell_mm: float = 3.0
    smooth_mm: float = 0.0
    percentiles: tuple[float, float] = (2.0, 99.0)
    seed_radius_mm: float = 3.0
    new_structure_k: float = 2.5
    network_veto: float = 0.05
    negative_k: float = 3.0
    negative_core: float = 0.25
    min_voxels: int = 30
    cortex_barrier: bool = True


@dataclass
class ClickResult:
    """What one click did.

    Attributes:
        click: the click as recorded.
        added: voxels that became ``structure``.
        removed: voxels that became background.
        seconds: wall time from the call to the updated mask.
        window: index bounds (k, j, i slices) that may have changed.
        note: why nothing changed, when nothing did.
        used_network: whether the network contributed.
    """

    click: Click
    added: int
    removed: int
    seconds: float
    window: tuple[slice, slice, slice]
    note: str = ""
    used_network: bool = False


@dataclass
class UndoEdit:
    """One undoable click: flat voxel indices with their values before and after (a sparse diff)."""

    click: Click
    index: np.ndarray
    before: np.ndarray
    after: np.ndarray


@dataclass
class ClickWindow:
    slices: tuple[slice, slice, slice]
    centre: tuple[int, int, int]  # click voxel, window-relative (k, j, i)
    distance_mm: np.ndarray  # physical distance of each window voxel from the click
    radius: float  # influence radius of the click (mm)
    gap: float  # distance (mm) from the click to the structure's nearest voxel (inf: not in reach)
