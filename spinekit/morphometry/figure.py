"""Quality-control figure: measured heights on a mid-sagittal reslice, muscle sections on an axial one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from spinekit import labels as lab
from spinekit.io import Volume, write_png
from spinekit.morphometry.context import SpineModel
from spinekit.morphometry.geometry import orthonormal_in_plane, plane_grid, sample, unit

#: Pixel size (mm) of the figure reslices.
FIGURE_STEP_MM = 0.75


def _sagittal_basis(model: SpineModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frames = [f for v, f in model.frames.items() if v != lab.SACRUM]
    centre = np.mean(
        [f.body_centroid_lps if np.all(np.isfinite(f.body_centroid_lps)) else f.centroid_lps for f in frames], axis=0
    )
    right = unit(np.mean([f.right for f in frames], axis=0))
    superior = unit(np.mean([f.superior for f in frames], axis=0))
    superior = unit(superior - np.dot(superior, right) * right)
    anterior = np.cross(superior, right)
    return centre, anterior, superior


def write_figure(
    model: SpineModel,
    table: pd.DataFrame,
    path: str | os.PathLike,
    image: Volume | None = None,
    muscles: Volume | None = None,
) -> Path:
    """Write ``measure.png``: heights drawn on a mid-sagittal reslice and muscle outlines at L4/L5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre, anterior, superior = _sagittal_basis(model)
    extent_sup = max(80.0, 0.5 * len(model.order) * 40.0 + 30.0)
    offsets_a = np.arange(-80.0, 80.0, FIGURE_STEP_MM)
    offsets_s = np.arange(-extent_sup, extent_sup, FIGURE_STEP_MM)
    grid = centre + offsets_a[None, :, None] * anterior + offsets_s[:, None, None] * superior
    background = sample(image, grid) if image is not None else None
    labels_plane = sample(model.spine, grid, order=0)
    ncols = 2 if muscles is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 8), dpi=100, squeeze=False)
    ax = axes[0, 0]
    box = (offsets_a[0], offsets_a[-1], offsets_s[0], offsets_s[-1])
    if background is not None:
        ax.imshow(background, cmap="gray", origin="lower", extent=box)
    ax.contour(
        offsets_a, offsets_s, labels_plane, levels=np.unique(labels_plane)[1:] - 0.5, colors="gold", linewidths=0.5
    )
    for v, result in model.heights.items():
        for position, (start, end) in result.segments.items():
            xs = [(start - centre) @ anterior, (end - centre) @ anterior]
            ys = [(start - centre) @ superior, (end - centre) @ superior]
            ax.plot(xs, ys, color="red", linewidth=1.2)
            if position == "middle":
                ax.text(
                    xs[0] + 2,
                    np.mean(ys),
                    f"{model.frames[v].name} {result.heights[position]:.1f}",
                    color="red",
                    fontsize=7,
                )
    discs = table[table["metric"] == "disc_height_middle"]
    for plane in (p for p in model.planes() if p.kind == "disc"):
        hit = discs[discs["structure"] == plane.name]
        if len(hit) and np.isfinite(hit["value"].iloc[0]):
            x, y = (plane.centre - centre) @ anterior, (plane.centre - centre) @ superior
            ax.text(x - 30, y, f"{hit['value'].iloc[0]:.1f}", color="cyan", fontsize=7)
    ax.set_title("mid-sagittal reslice: body heights (red), disc heights (cyan), mm")
    ax.set_xlabel("anterior (mm)")
    ax.set_ylabel("superior (mm)")
    if muscles is not None:
        _muscle_panel(axes[0, 1], model, table, image, muscles)
    fig.tight_layout()
    return write_png(fig, path)


def _muscle_panel(ax, model: SpineModel, table: pd.DataFrame, image: Volume | None, muscles: Volume) -> None:
    planes = [p for p in model.planes() if p.kind == "disc"]
    if not planes:
        ax.set_title("no disc level for the axial panel")
        return
    preferred = [p for p in planes if p.name == "L4/L5"]
    plane = preferred[0] if preferred else planes[len(planes) // 2]
    u, v = orthonormal_in_plane(plane.normal, np.cross(plane.anterior, plane.normal))
    grid, offsets = plane_grid(plane.centre, u, v, 130.0, 1.0)
    if image is not None:
        ax.imshow(sample(image, grid), cmap="gray", origin="lower", extent=(offsets[0], offsets[-1]) * 2)
    values = sample(muscles, grid, order=0)
    present = [m for m in np.unique(values) if m > 0]
    colors = {m: np.asarray(lab.MUSCLES[m].color) / 255.0 if m in lab.MUSCLES else (1, 1, 0) for m in present}
    for m in present:
        ax.contour(offsets, offsets, (values == m).astype(float), levels=[0.5], colors=[colors[m]], linewidths=1)
    rows = table[(table["metric"] == "csa_cm2") & table["structure"].str.endswith(f" {plane.name}")]
    text = "\n".join(
        f"{s.split(' ')[0]}: {val:.1f} cm2" for s, val in zip(rows["structure"], rows["value"], strict=True)
    )
    ax.text(offsets[0] + 3, offsets[-1] - 3, text, color="white", fontsize=7, va="top")
    ax.set_title(f"axial reslice at {plane.name}: muscle outlines, CSA")
    ax.set_xlabel("right-left in plane (mm)")
