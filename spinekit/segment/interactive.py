"""Interactive correction: DeepEdit-style clicks that fix one structure of a label map in a fraction of a second.

A :class:`InteractiveSession` holds one image and its current label map (spine or muscle map, our label numbers).
``add_click(point_lps, structure, positive)`` re-segments ``structure`` inside a local window around the click and
writes back only voxels of that structure; every click can be undone and redone, and a session is saved and resumed
as a correction folder (:mod:`spinekit.segment.corrections`) that ``spinekit train --add DIR`` learns from.

How it relates to the literature:

- DeepEdit (Diaz-Pinto et al. 2022, MONAI Label, arXiv:2203.12362) feeds the image plus one Gaussian click channel
  per class to the segmentation network and lets the network redraw the whole label map. We use the same network
  and channel layout (:mod:`spinekit.segment.guidance`), but only inside a window around the click, and only as
  *evidence*: our shipped networks are trained for under an hour on CPU, so letting them redraw a structure would
  undo good voxels as often as it fixes bad ones.
- nnInteractive (Isensee et al. 2025, arXiv:2503.08373) also works in a local patch around the interaction and
  pastes the result back, and keeps the previous mask as an input so edits stay local. We do the same with the
  previous mask as a hard prior: a click changes only a connected region around itself.

What is image-driven and what is network-driven:

1. *Positive click* (image-driven region growing, in the spirit of ITK's ``ConfidenceConnected``; Yoo 2004, ITK
   Software Guide, section 9.1.3): the structure's intensity range is taken from its current voxels (robust
   percentiles, widened to the half-way partial-volume level towards darker/brighter neighbours and floored at
   the half-way level between the structure and the tissue touching it; a new structure takes median +- k robust
   SD of the click's neighbourhood). The voxels added are the connected region containing the click that lies in
   that range, is not another structure, lies within a radius that grows with the click's distance to the current
   mask (``base_radius_mm + radius_per_mm * distance``: a click far from the mask says "a large part is
   missing"), and stays within ``shell_mm`` (plus that distance) of the current mask. For a vertebra with a
   cortical shell, the voxels added must also be reached from the marrow without crossing the cortex (marker
   watershed on the intensity), or be as bright as the marrow: at 3 mm CT marrow and disc overlap in HU and only
   the endplate separates them.
2. *Network* (when a model is given): the window, resampled to the network's working spacing, with the session's
   clicks for this structure in the DeepEdit guidance channels, gives a probability for the structure's class. It
   vetoes candidate voxels it is confident are not this class (probability below ``network_veto``) except near a
   positive click, where the Gaussian click map (:func:`spinekit.segment.clicks.gaussian_click_map`) overrides it.
3. *Negative click* (image-driven): when the click's intensity is incompatible with the rest of the structure (a
   leak into disc, fat or muscle), the connected incompatible region around the click is removed, plus any piece
   of the structure it cuts off near the click. When it looks the same (a leak into tissue of the same kind), the
   structure is split at its narrowest neck between the click and the main body (marker watershed on the negative
   distance transform; Beucher & Meyer 1993) and the click's side is removed. Removed voxels become background.
   A bright click on a soft-tissue structure (a muscle drawn over bone) removes the connected voxels brighter than
   the structure's median + ``negative_k`` robust SD: bone under it spans ~150 to >1000 HU, not one value.

A positive click never overwrites another label; a click on label 0 (``structure=0``) removes whatever structure
lies under it. The session works at the label map's own resolution.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from spinekit.errors import InputError, LabelError
from spinekit.io import Volume, check_finite, check_label_grid
from spinekit.labels import is_vertebra
from spinekit.segment.clicks import Click, gaussian_click_map, robust_sigma
from spinekit.segment.interactive_intensity import boundary_range, seed_range, structure_range
from spinekit.segment.interactive_network import WindowNetwork
from spinekit.segment.interactive_regions import cut_off_orphans, flood_region, neck_split
from spinekit.segment.interactive_types import ClickResult, ClickWindow, InteractiveSettings, UndoEdit

log = logging.getLogger(__name__)


class InteractiveSession:
    """Click-driven correction of one label map on its image's grid.

    Args:
        image: the scan (any orientation and spacing).
        labels: the current label map on the image's grid (our spine or muscle numbers).
        task: "spine" or "muscles": how structures map to network classes and how corrections are saved.
        model: None (image-driven only), a model name for :func:`spinekit.segment.networks.load_model`, or a
            ``(network, TaskConfig)`` pair already loaded. Loaded once per session.
        settings: click response sizes.
        models_dir, device: where the named model lives and where it runs.

    Raises:
        GridMismatchError: ``labels`` is not on the grid of ``image``.
        LabelError: ``labels`` holds non-integer values.
    """

    def __init__(
        self,
        image: Volume,
        labels: Volume,
        task: str = "spine",
        model=None,
        settings: InteractiveSettings | None = None,
        models_dir: str | Path | None = None,
        device: str = "cpu",
    ):
        check_label_grid(image, labels)
        check_finite(image)
        if task not in ("spine", "muscles"):
            raise InputError(f"task must be 'spine' or 'muscles', not {task!r}")
        array = np.asarray(labels.array)
        if not np.issubdtype(array.dtype, np.integer):
            if not np.allclose(array, np.rint(array)):
                raise LabelError("the label map has non-integer values; pass integer labels")
            array = np.rint(array).astype(np.int32)
        self.image = image
        self.task = task
        self.settings = settings or InteractiveSettings()
        self._labels = np.array(array, copy=True)
        self._loaded_clicks: list[Click] = []
        self._undo: list[UndoEdit] = []
        self._redo: list[UndoEdit] = []
        self._network = None
        if model is not None:
            self._network = WindowNetwork.create(image, model, task, models_dir, device)

    # --- state -------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> Volume:
        """The current label map (a read-only view; copy it to keep a snapshot)."""
        view = self._labels.view()
        view.flags.writeable = False
        return self.image.with_array(view)

    @property
    def clicks(self) -> list[Click]:
        """Clicks in effect (undone clicks excluded), oldest first."""
        return [*self._loaded_clicks, *(edit.click for edit in self._undo)]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def has_network(self) -> bool:
        return self._network is not None

    # --- clicks ------------------------------------------------------------------------------------------------
    def add_click(self, point_lps, structure: int, positive: bool = True) -> ClickResult:
        """Correct ``structure`` around ``point_lps`` (LPS mm); ``positive`` = the point belongs to the structure.

        A click on a structure that is absent creates it. ``structure=0`` removes whatever lies under the point.

        Raises:
            InputError: the point is not finite or lies outside the image, or ``structure`` is not a label value.
        """
        start = time.perf_counter()
        point = np.asarray(point_lps, dtype=float).reshape(-1)
        if point.size != 3 or not np.all(np.isfinite(point)):
            raise InputError(f"click position must be three finite LPS coordinates (mm), not {point_lps!r}")
        if isinstance(structure, bool) or not float(structure).is_integer() or int(structure) < 0:
            raise InputError(f"structure must be a non-negative integer label value, not {structure!r}")
        structure = int(structure)
        voxel = self._voxel_of(point)
        if structure == 0:
            under = int(self._labels[voxel])
            click = Click(tuple(point), 0, False)
            if under == 0:
                return self._record(click, None, None, None, start, (slice(0, 0),) * 3, "the point is background")
            structure, positive = under, False
        else:
            click = Click(tuple(point), structure, bool(positive))
        if structure > np.iinfo(self._labels.dtype).max:
            self._labels = self._labels.astype(np.int32)
        window = self._window(voxel, structure, positive)
        if positive:
            change, note, used = self._grow(window, structure, click)
        else:
            change, note, used = self._shrink(window, structure)
            used = False
        if change is None or not change.any():
            return self._record(click, None, None, None, start, window.slices, note or "nothing to change", used)
        local = np.argwhere(change)
        offset = np.array([s.start for s in window.slices])
        index = np.ravel_multi_index(tuple((local + offset).T), self._labels.shape)
        before = self._labels.ravel()[index].copy()
        after = np.full(index.shape, structure if positive else 0, dtype=self._labels.dtype)
        return self._record(click, index, before, after, start, window.slices, note, used)

    def undo(self) -> bool:
        """Revert the last click (exactly); False when there is nothing to undo."""
        if not self._undo:
            return False
        edit = self._undo.pop()
        self._labels.ravel()[edit.index] = edit.before
        self._redo.append(edit)
        return True

    def redo(self) -> bool:
        """Re-apply the last undone click; False when there is nothing to redo."""
        if not self._redo:
            return False
        edit = self._redo.pop()
        self._labels.ravel()[edit.index] = edit.after
        self._undo.append(edit)
        return True

    # --- persistence -------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the session as a correction folder (image, labels, clicks; atomic). Returns the folder."""
        from spinekit.segment.corrections import save_correction

        return save_correction(folder, self.image, self.labels, self.clicks, self.task)

    @classmethod
    def load(cls, folder: str | Path, model=None, **kwargs) -> InteractiveSession:
        """Resume a saved session: same image, mask and clicks; the undo history starts empty (saved clicks stay)."""
        from spinekit.segment.corrections import load_correction

        record = load_correction(folder)
        session = cls(record.image, record.labels, record.task, model, **kwargs)
        session._loaded_clicks = list(record.clicks)
        return session

    # --- internals ---------------------------------------------------------------------------------------------
    def _record(self, click, index, before, after, start, slices, note="", used=False) -> ClickResult:
        if index is None:
            index, before, after = np.zeros(0, np.int64), np.zeros(0, self._labels.dtype), np.zeros(0)
        else:
            self._labels.ravel()[index] = after
        self._undo.append(UndoEdit(click, index, before, after.astype(self._labels.dtype)))
        self._redo.clear()
        added = int(np.count_nonzero(after)) if after.size else 0
        result = ClickResult(click, added, int(after.size) - added, time.perf_counter() - start, slices, note, used)
        log.debug("click %s: +%d -%d voxels in %.3f s %s", click, result.added, result.removed, result.seconds, note)
        return result

    def _voxel_of(self, point: np.ndarray) -> tuple[int, int, int]:
        ijk = self.image.lps_to_index(point)
        shape = np.asarray(self.image.shape_ijk)
        if np.any(ijk < -0.5) or np.any(ijk > shape - 0.5):
            lo = self.image.index_to_lps(np.zeros(3))
            hi = self.image.index_to_lps(shape - 1.0)
            raise InputError(
                f"click at LPS {np.round(point, 1).tolist()} mm lies outside the image (voxel index "
                f"{np.round(ijk, 1).tolist()}, grid {shape.tolist()}; corner voxels at {np.round(lo, 1).tolist()} and "
                f"{np.round(hi, 1).tolist()} mm); click inside the volume"
            )
        i, j, k = np.clip(np.rint(ijk).astype(int), 0, shape - 1)
        return int(k), int(j), int(i)

    def _spacing_kji(self) -> np.ndarray:
        return np.asarray(self.image.spacing[::-1], dtype=float)

    def _window(self, voxel, structure: int, positive: bool) -> ClickWindow:
        """Cube around the click whose half-size is the click's influence radius (see :class:`InteractiveSettings`)."""
        s = self.settings
        spacing = self._spacing_kji()
        gap = math.inf
        if positive:
            half = np.ceil(s.max_radius_mm / spacing).astype(int)
            lo = np.maximum(np.asarray(voxel) - half, 0)
            hi = np.minimum(np.asarray(voxel) + half + 1, self._labels.shape)
            big = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            inside = np.argwhere(self._labels[big] == structure)
            if len(inside):
                gap = float(np.sqrt((((inside + lo - voxel) * spacing) ** 2).sum(axis=1)).min())
            radius = s.base_radius_mm + s.radius_per_mm * gap if math.isfinite(gap) else s.new_radius_mm
        else:
            radius = s.max_radius_mm
        radius = float(min(radius, s.max_radius_mm))
        half = np.ceil(radius / spacing).astype(int) + 1
        lo = np.maximum(np.asarray(voxel) - half, 0)
        hi = np.minimum(np.asarray(voxel) + half + 1, self._labels.shape)
        slices = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        centre = tuple(int(v - a) for v, a in zip(voxel, lo, strict=True))
        grids = np.ogrid[tuple(slice(0, b - a) for a, b in zip(lo, hi, strict=True))]
        distance = np.sqrt(sum(((g - c) * sp) ** 2 for g, c, sp in zip(grids, centre, spacing, strict=True)))
        return ClickWindow(slices, centre, distance, radius, gap)

    def _smoothed(self, slices) -> np.ndarray:
        """Image in ``slices``, Gaussian-smoothed with context so the window edge is not biased."""
        if self.settings.smooth_mm <= 0:
            return self.image.array[slices].astype(np.float32)
        spacing = self._spacing_kji()
        sigma = self.settings.smooth_mm / spacing
        pad = np.ceil(3 * sigma).astype(int)
        lo = [max(sl.start - p, 0) for sl, p in zip(slices, pad, strict=True)]
        hi = [min(sl.stop + p, n) for sl, p, n in zip(slices, pad, self._labels.shape, strict=True)]
        crop = self.image.array[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))].astype(np.float32)
        smooth = ndimage.gaussian_filter(crop, sigma, truncate=3.0)
        return smooth[tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(slices, lo, strict=True))]

    def _grow(self, window: ClickWindow, structure: int, click: Click):
        labels = self._labels[window.slices]
        centre = window.centre
        if labels[centre] not in (0, structure):
            return None, f"the point lies in structure {int(labels[centre])}; remove it there first", False
        mask = labels == structure
        free = labels == 0
        image = self._smoothed(window.slices)
        ball = window.distance_mm <= window.radius
        to_mask = ndimage.distance_transform_edt(~mask, sampling=self._spacing_kji()) if mask.any() else None
        if mask.sum() >= self.settings.min_voxels:
            core = ndimage.binary_erosion(mask)
            values = image[core] if core.sum() >= self.settings.min_voxels else image[mask]
            rim = core & ~ndimage.binary_erosion(core)
            low, high = boundary_range(values, image[rim] if rim.any() else values, image[free], self.settings)
            # Two-class floor/ceiling: never accept voxels nearer the typical tissue touching the structure (the
            # free ring just outside it) than the structure's own median. This keeps a coarse or partial-volume
            # mask, whose percentiles reach into muscle, from growing into muscle.
            ring = free & (to_mask <= 1.5 * float(self._spacing_kji().max()))
            if ring.sum() >= self.settings.min_voxels:
                typical, touching = float(np.median(values)), float(np.median(image[ring]))
                # Capped at the structure's 10th/90th percentile: the floor never rejects more than a tenth of the
                # structure's own intensities (a thin missing rim around the mask would otherwise set the ring).
                p10, p90 = np.percentile(values, (10, 90))
                if touching < typical:
                    low = max(low, min(0.5 * (typical + touching), float(p10)))
                else:
                    high = min(high, max(0.5 * (typical + touching), float(p90)))
            # Trust the user: the click's own intensity is part of the structure even when the mask says otherwise.
            seed = (window.distance_mm <= self.settings.seed_radius_mm) & (free | mask)
            click_value = float(np.median(image[seed])) if seed.any() else float(image[centre])
            low, high = min(low, click_value), max(high, click_value)
        else:
            low, high = seed_range(image, window, free | mask, self.settings)
        candidate = (image >= low) & (image <= high) & (free | mask) & ball
        if to_mask is not None:
            # Shell: growth stays near the current mask (a click repairs a boundary, it does not segment afresh).
            candidate &= to_mask <= window.gap + self.settings.shell_mm
        used = False
        if self._network is not None:
            clicks = [*self.clicks, click]
            probability = self._network.probability(self, window, structure, clicks)
            if probability is not None:
                positives = [c.point_lps for c in clicks if c.structure == structure and c.positive]
                points = [self._relative_voxel(p, window) for p in positives]
                attraction = gaussian_click_map(labels.shape, points, self.image.spacing)
                candidate &= np.maximum(probability, attraction) >= self.settings.network_veto
                used = True
        barrier = self._cortex_basin(image, labels, mask, to_mask, window, structure)
        if barrier is not None:
            candidate &= barrier
        candidate[centre] = True
        region = flood_region(candidate, centre)
        return region & ~mask, "", used

    def _cortex_basin(self, image, labels, mask, to_mask, window: ClickWindow, structure: int) -> np.ndarray | None:
        """Voxels a vertebra's marrow reaches without climbing over its cortex, plus voxels as bright as the marrow.

        At 3 mm, partial volume makes marrow (about 120 HU in an adult lumbar body) and disc or muscle (50-100 HU)
        overlap, so no intensity range separates them; what does is the bright cortical shell (endplates) between
        them. Marker-controlled watershed on the raw intensity (Beucher & Meyer 1993; the minimax-path view of
        Udupa & Samarasekera 1996, fuzzy connectedness) floods from the marrow (the eroded mask) and from the
        background (other labels, free voxels beyond the click's shell or reach) and lets each basin take the
        voxels it reaches through the lowest crest: a missing piece of marrow joins the marrow, a disc behind an
        endplate joins the background. Cortex and uniformly bright bone (posterior elements, a plateau rather than
        a basin) are kept by the second term. None when the structure has no brighter shell (muscles, MRI).
        """
        from skimage.segmentation import watershed

        s = self.settings
        if not s.cortex_barrier or self.task != "spine" or not is_vertebra(structure) or to_mask is None:
            return None
        core = ndimage.binary_erosion(mask)
        if core.sum() < s.min_voxels:
            return None
        marrow = float(np.median(image[core]))
        if float(np.median(image[mask & ~core])) <= marrow:
            return None
        markers = np.zeros(mask.shape, dtype=np.int32)
        markers[(labels != 0) & ~mask] = 2
        markers[(labels == 0) & ((to_mask > window.gap + s.shell_mm) | (window.distance_mm > window.radius))] = 2
        markers[core] = 1
        markers[window.centre] = 1
        return (watershed(image, markers) == 1) | (image >= marrow)

    def _shrink(self, window: ClickWindow, structure: int):
        labels = self._labels[window.slices]
        mask = labels == structure
        centre = window.centre
        if not mask[centre]:
            return None, f"the point is not in structure {structure}; nothing to remove", False
        s = self.settings
        image = self._smoothed(window.slices)
        depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=self._spacing_kji())[1:-1, 1:-1, 1:-1]
        local = min(s.base_radius_mm + s.radius_per_mm * float(depth[centre]), s.max_radius_mm)
        seed = mask & (window.distance_mm <= s.seed_radius_mm)
        click_value = float(np.median(image[seed]))
        # The structure's intensity is judged away from the click, so the leak itself does not widen it.
        away = mask & (window.distance_mm > local)
        if away.sum() < s.min_voxels:
            away = mask & ~seed
        if away.sum() >= s.min_voxels:
            values = image[away]
            low, high = structure_range(values, self.settings)
            typical = float(np.median(values))
            if not low <= click_value <= high or abs(click_value - typical) > s.negative_k * robust_sigma(values):
                # Two-class split between the click's intensity and the structure's: flood the voxels clearly like
                # the click (within a quarter of the way), then take in the half-way band one voxel deep, so the
                # leak's blurred border goes with it but partial-volume rims of the structure are not followed.
                gap = np.abs(image - click_value)
                step = abs(typical - click_value)
                # Only voxels outside the structure's range, on the click's side, can go: a click never removes
                # what looks like the structure.
                unlike = (image < low) | (image > high)
                like_click = gap < s.negative_core * step
                if click_value > typical and not (self.task == "spine" and is_vertebra(structure)):
                    # Bone under a soft-tissue mask (a muscle drawn over a vertebra or the ilium) is not one
                    # intensity: cortex, marrow and their partial-volume mixtures spread from ~150 to >1000 HU on CT,
                    # so "near the click's value" misses most of it. Everything brighter than the structure's own
                    # robust upper limit (median + k robust SD, from voxels away from the click) goes instead.
                    # The percentile range is no guide here: the bone under the mask is in it.
                    bone_like = image > typical + s.negative_k * robust_sigma(values)
                    like_click |= bone_like
                    unlike |= bone_like
                clear = mask & unlike & like_click & (window.distance_mm <= window.radius)
                clear[centre] = True
                region = flood_region(clear, centre)
                band = mask & unlike & (gap < 0.5 * step)
                region |= ndimage.binary_dilation(region) & band
                if region.sum() > 0.5 * mask.sum():
                    log.info("negative click: the click-like region is most of the structure; removing locally only")
                    region &= window.distance_mm <= max(float(depth[centre]), s.seed_radius_mm)
                return region | cut_off_orphans(mask & ~region, window.distance_mm <= window.radius), "", False
        ball = window.distance_mm <= local
        return neck_split(mask, depth, ball, centre, window.distance_mm, local), "", False

    def _relative_voxel(self, point_lps, window: ClickWindow) -> tuple[int, int, int]:
        i, j, k = np.rint(self.image.lps_to_index(np.asarray(point_lps, dtype=float))).astype(int)
        return k - window.slices[0].start, j - window.slices[1].start, i - window.slices[2].start
