"""PNG of the factor of risk per vertebra and task, with the 1.0 threshold and its ±20 % transition zone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from spinekit.biomech import constants as C
from spinekit.io import write_png


def risk_figure(risk: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Grouped bars of load/strength (``risk`` columns: vertebra, task, factor_of_risk); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    table = risk.pivot(index="vertebra", columns="task", values="factor_of_risk")
    order = [v for v in ("T12", "L1", "L2", "L3", "L4", "L5") if v in table.index]
    table = table.loc[order]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    x = np.arange(len(table.index))
    width = 0.8 / max(1, len(table.columns))
    for i, task in enumerate(table.columns):
        ax.bar(x + i * width - 0.4 + width / 2, table[task].to_numpy(dtype=float), width, label=task)
    low, high = C.RISK_THRESHOLD * (1 - C.RISK_TRANSITION), C.RISK_THRESHOLD * (1 + C.RISK_TRANSITION)
    ax.axhspan(low, high, color="orange", alpha=0.2, label="transition ±20 %")
    ax.axhline(C.RISK_THRESHOLD, color="red", lw=1.2, label="load = strength")
    ax.set_xticks(x, table.index)
    ax.set_ylabel("factor of risk (load / strength)")
    ax.set_title(title or "Vertebral factor of risk per task")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return write_png(fig, path)
