"""Thumbnails of a subject's scan with its masks: mid-sagittal and coronal slices through the spine."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

#: slices shown at most this many pixels tall (a report of 30 thumbnails stays a few MB).
THUMBNAIL_DPI = 60


def figure_to_data_uri(figure) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the report embeds every figure)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _window(array: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(array[:: max(1, array.size // 200_000)], (1, 99))
    return float(low), float(high if high > low else low + 1)


def subject_thumbnail(image_path: Path, spine_path: Path | None, title: str = "", muscles_path: Path | None = None):
    """Figure with a mid-sagittal and a coronal slice through the spine's centroid, masks overlaid.

    Both volumes are reoriented to LPS first (lossless axis permutation), so the display is in anatomical
    orientation whatever the file's direction matrix; the aspect ratio follows the physical spacing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spinekit.io import read_labels, read_volume, reorient

    image = reorient(read_volume(image_path, check=False), "LPS")
    masks = []
    for path in (spine_path, muscles_path):
        if path is not None and Path(path).exists():
            try:
                masks.append(reorient(read_labels(path, check=False), "LPS"))
            except Exception:  # noqa: BLE001 - a thumbnail must not fail the report
                continue
    masks = [m for m in masks if m.array.shape == image.array.shape]
    union = np.zeros(image.array.shape, dtype=bool)
    for mask in masks:
        union |= mask.array > 0
    # k: inferior->superior, j: anterior->posterior, i: right->left (LPS).
    centre = np.argwhere(union).mean(axis=0).round().astype(int) if union.any() else np.array(image.array.shape) // 2
    si, sj, sk = image.spacing
    low, high = _window(image.array)
    figure, axes = plt.subplots(1, 2, figsize=(4.0, 3.2), dpi=THUMBNAIL_DPI)
    views = (
        (image.array[:, :, centre[2]], [m.array[:, :, centre[2]] for m in masks], sk / sj, "sagittal"),
        (image.array[:, centre[1], :], [m.array[:, centre[1], :] for m in masks], sk / si, "coronal"),
    )
    for axis, (plane, overlays, aspect, name) in zip(axes, views, strict=True):
        axis.imshow(plane, cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect, interpolation="nearest")
        for overlay in overlays:
            shown = np.ma.masked_where(overlay == 0, overlay)
            axis.imshow(shown, cmap="tab20", alpha=0.45, origin="lower", aspect=aspect, interpolation="nearest")
        axis.set_title(name, fontsize=8)
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=9)
    return figure
