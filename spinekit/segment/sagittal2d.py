"""Real sagittal MRI slices with vertebral body and disc masks (``../shared/data/mri_sagittal_2d``) as 3D volumes.

The set (sulaimanvesal/vertebraeSegementation, MIT) holds 20 single sagittal lumbar MRI slices (T1- and T2-weighted,
256 x 256, 8-bit PNG, no spacing) with masks 1 = disc, 2 = vertebral body (the S1 body included). It is the only
real spine MRI with spine labels reachable here, so it serves two purposes:

- evaluation of the spine network on real MRI (``benchmarks/bench_segment.py``), images of ``validA.csv``;
- real MRI appearance in training (``spinekit train``), images of ``trainA.csv`` only.

Our networks are 3D, so a slice becomes a pseudo-3D slab: the slice repeated left to right over
:data:`SLAB_WIDTH_MM` (about the width of a lumbar body, 40-50 mm; Zhou et al. 2000, Spine 25:2035), set in an
empty (zero) field. This is an approximation: every structure in the slab is a left-right extrusion of its
midsagittal profile. ASSUMPTION: the pixel size is unknown; :data:`ASSUMED_PIXEL_MM` (1.1 mm, a 282 mm field of
view) makes the lumbar bodies 25-30 mm tall as in adults (Zhou et al. 2000).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinekit.io import Volume

#: Assumed in-plane pixel size (mm) of the 256 x 256 slices (see module docstring).
ASSUMED_PIXEL_MM = 1.1
#: Left-right width (mm) over which a slice is repeated.
SLAB_WIDTH_MM = 45.0
#: Left-right spacing (mm) of the slab (the networks' working spacing).
SLAB_SPACING_MM = 3.0
#: Empty margin (mm) left and right of the slab.
SLAB_MARGIN_MM = 60.0
MASK_DISC = 1
MASK_BODY = 2


@dataclass(frozen=True)
class SagittalSlice:
    """One slice: image (rows superior -> inferior, columns anterior -> posterior) and its mask."""

    name: str
    image: np.ndarray
    mask: np.ndarray


def read_split(folder: Path, split: str) -> list[SagittalSlice]:
    """The slices listed in ``<split>.csv`` (``trainA`` or ``validA``) that carry any label."""
    from PIL import Image

    folder = Path(folder)
    names = [line.strip() for line in (folder / f"{split}.csv").read_text().splitlines()[1:] if line.strip()]
    slices = []
    for name in names:
        mask = np.load(folder / "masks" / f"{name}.npy")
        if not mask.any():
            continue
        image = np.asarray(Image.open(folder / "images" / f"{name}.png"), dtype=np.float32)
        slices.append(SagittalSlice(name, image, mask.astype(np.int16)))
    return slices


def slab(plane: np.ndarray, pixel_mm: float = ASSUMED_PIXEL_MM, fill: float = 0.0) -> Volume:
    """A sagittal plane as an LPS volume: repeated over :data:`SLAB_WIDTH_MM` left-right, ``fill`` around it.

    The plane's rows run superior to inferior and its columns anterior to posterior (radiological display), so
    array axis k (superior) is the reversed row axis and j (posterior) the column axis.
    """
    n_slab = int(round(SLAB_WIDTH_MM / SLAB_SPACING_MM))
    n_margin = int(round(SLAB_MARGIN_MM / SLAB_SPACING_MM))
    column = plane[::-1, :]  # k = superior first
    array = np.full((*column.shape, n_slab + 2 * n_margin), fill, dtype=plane.dtype)
    array[:, :, n_margin : n_margin + n_slab] = column[:, :, None]
    return Volume(array, spacing=(SLAB_SPACING_MM, pixel_mm, pixel_mm))


#: Predictions are scored within this margin (mm) of the labelled column: the masks hold bodies only, so the
#: posterior elements we segment are left out of the comparison.
SCORE_MARGIN_MM = 8.0


def column_dice(item: SagittalSlice, bone: np.ndarray, disc: np.ndarray) -> tuple[float, float]:
    """Dice of predicted bone and disc planes against the slice's bodies and discs, near the labelled column."""
    from scipy import ndimage

    near = ndimage.binary_dilation(item.mask > 0, iterations=round(SCORE_MARGIN_MM / ASSUMED_PIXEL_MM))

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        total = a.sum() + b.sum()
        return float(2 * (a & b).sum() / total) if total else float("nan")

    return dice(bone & near, item.mask == MASK_BODY), dice(disc & near, item.mask == MASK_DISC)


def lumbosacral_disc_named(item: SagittalSlice, spine_plane: np.ndarray) -> bool:
    """Whether our labels (``spine_plane``, the slab's centre plane) call the slice's lowest labelled disc L5/S1.

    The masks label the S1 body below the lowest disc (module docstring), so that disc is L5/S1; most of its pixels
    must carry our L5/S1 disc label.
    """
    from scipy import ndimage

    from spinekit import labels as lb

    discs, n = ndimage.label(item.mask == MASK_DISC)
    if not n:
        return False
    lowest = max(range(1, n + 1), key=lambda i: np.argwhere(discs == i)[:, 0].mean())
    values, counts = np.unique(spine_plane[discs == lowest], return_counts=True)
    return int(values[np.argmax(counts)]) == lb.disc_label(24)


def centre_plane(volume: Volume) -> np.ndarray:
    """The middle left-right plane of a slab-shaped volume, back in the slice's row/column order."""
    return volume.array[:, :, volume.array.shape[2] // 2][::-1, :]


#: Slices with fewer vertebral body pixels than this are parasagittal (partial bodies): left out of training.
MIN_BODY_PIXELS = 2000
#: Unlabelled bone behind the bodies (posterior elements, canal) reaches this far back (mm): the spinous process of a
#: lumbar vertebra ends 80-100 mm behind the anterior body wall (Panjabi et al. 1992, Spine 17:299).
POSTERIOR_REACH_MM = 70.0
#: The sacrum below the labelled S1 body reaches this far down (mm; the adult sacrum is 100-120 mm long).
SACRUM_REACH_MM = 90.0
#: Directly behind a vertebral body, in the midsagittal plane, lies the spinal canal: its midsagittal diameter is
#: 15-25 mm in adults and under 10 mm only in severe stenosis (Ullrich et al. 1980, Radiology 134:137; pedicles
#: and laminae lie off the midline or farther back). So the first CANAL_CLEAR_MM behind a labelled body, after a
#: CANAL_GAP_MM allowance for the mask's edge, is canal or background, never bone (set ``{background, canal}``).
#: Without it the band behind the bodies left the canal free and on T1 slices the network filled it with "bone".
CANAL_CLEAR_MM = 6.0
CANAL_GAP_MM = 2.0


def plane_targets(mask: np.ndarray, n_classes: int, pixel_mm: float = ASSUMED_PIXEL_MM) -> np.ndarray:
    """Spine-task targets in the plane: labelled bodies, discs and S1, with ambiguity sets where bone is unlabelled.

    Classes: 1 vertebra, 2 sacrum (the labelled body below the lowest disc), 3 disc. Target ``n_classes`` (set
    ``{background, vertebra, sacrum, canal}``) marks the band behind the labels (posterior elements, canal) and
    above the top label; ``n_classes + 1`` (``{background, sacrum}``) the sacrum below S1; ``n_classes + 2``
    (``{background, canal}``) the canal just behind each body (``CANAL_CLEAR_MM``). Elsewhere background is known
    (anterior soft tissue, air).
    """
    from scipy import ndimage

    target = np.zeros(mask.shape, dtype=np.int16)
    discs = mask == MASK_DISC
    bodies, n_bodies = ndimage.label(mask == MASK_BODY)
    lowest_disc_row = np.argwhere(discs)[:, 0].max() if discs.any() else -1
    for index in range(1, n_bodies + 1):
        rows = np.argwhere(bodies == index)[:, 0]
        cls = 2 if lowest_disc_row >= 0 and rows.mean() > lowest_disc_row else 1
        target[bodies == index] = cls
    target[discs] = 3
    labelled_rows = np.flatnonzero(mask.any(axis=1))
    if not len(labelled_rows):
        return target
    reach = int(round(POSTERIOR_REACH_MM / pixel_mm))
    columns = np.arange(mask.shape[1])
    gap, clear = (int(round(mm / pixel_mm)) for mm in (CANAL_GAP_MM, CANAL_CLEAR_MM))
    for row in labelled_rows:
        back = np.flatnonzero(mask[row]).max()
        band = (columns > back) & (columns <= back + reach)
        target[row, band & (target[row] == 0)] = n_classes
        if mask[row, back] == MASK_BODY:
            target[row, back + gap + 1 : back + gap + clear + 1] = n_classes + 2
    top, bottom = labelled_rows.min(), labelled_rows.max()
    first, last = np.flatnonzero(mask[top]), np.flatnonzero(mask[bottom])
    margin = int(round(10.0 / pixel_mm))
    target[:top, max(first.min() - margin, 0) : first.max() + reach + 1] = n_classes
    down = bottom + 1 + int(round(SACRUM_REACH_MM / pixel_mm))
    target[bottom + 1 : down, max(last.min() - 2 * margin, 0) : last.max() + reach + 1] = n_classes + 1
    return target


#: Default sampling weight of all training slices together, relative to one phantom (``spinekit train``).
TOTAL_WEIGHT = 4.0


def training_sources(folder: Path, config, split: str = "trainA", total_weight: float = TOTAL_WEIGHT) -> list:
    """The split's midsagittal slices as real image/label sources for the spine task (see module docstring).

    The image goes to the working grid as at inference (``inference.to_network_grid``, normalised inside
    ``inference.body_roi``). ``total_weight`` is the sampling weight of all slices together, relative to one phantom.
    """
    from spinekit.io import resample_like
    from spinekit.segment.dataset import LabelMap
    from spinekit.segment.inference import body_roi, to_network_grid
    from spinekit.segment.synthesis import normalise_real

    if config.task != "spine":
        return []
    slices = [s for s in read_split(folder, split) if (s.mask == MASK_BODY).sum() >= MIN_BODY_PIXELS]
    sources = []
    for sl in slices:
        grid = to_network_grid(slab(sl.image), config.spacing_mm)
        roi = body_roi(grid)
        image = np.zeros(grid.array.shape, dtype=np.float32)
        image[roi] = normalise_real(grid.array[roi])
        target = resample_like(slab(plane_targets(sl.mask, config.n_classes)), grid, is_label=True).array
        target = target.astype(np.int16)
        generation = np.where(target < config.n_classes, target, 0).astype(np.int32)
        sources.append(
            LabelMap(
                f"mri_sagittal_2d/{sl.name}",
                generation,
                target,
                extra_sets=((0, 1, 2, 4), (0, 2), (0, 4)),
                image=image,
                image_fraction=1.0,
                sample_weight=total_weight / max(len(slices), 1),
            )  # fmt: skip
        )
    return sources
