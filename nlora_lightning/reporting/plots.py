"""PNG figures of a run: annotated heatmaps (accuracy, collision, overlap) and per-layer sparsity.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state, no
display needed) and returned as PNG bytes; :func:`save_png` writes them atomically.
"""

from __future__ import annotations

import io
import math
import os
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nlora_lightning.io import atomic_open

__all__ = ["heatmap_png", "save_png", "short_layer_names", "sparsity_png"]

_DPI = 110


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def save_png(path: str | os.PathLike, png: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(png)


def heatmap_png(
    values: Sequence[Sequence[Optional[float]]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    value_format: str = "{:.1f}",
    scale: float = 1.0,
    vmin: float = 0.0,
    vmax: float = 1.0,
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = "viridis",
    colorbar_label: str = "",
) -> bytes:
    """An annotated heatmap: one cell per value, written in the cell (``value_format`` of ``value * scale``).

    ``None`` and NaN cells are left blank (grey).
    """
    data = np.array([[math.nan if v is None else float(v) for v in row] for row in values], dtype=float).reshape(
        len(row_labels), len(col_labels)
    )
    rows, cols = data.shape
    figure = Figure(figsize=(max(4.5, 0.75 * cols + 2.5), max(3.5, 0.55 * rows + 2.0)))
    ax = figure.subplots()
    ax.set_facecolor("#dddddd")
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    colorbar = figure.colorbar(image, ax=ax)
    if colorbar_label:
        colorbar.set_label(colorbar_label)
    ax.set_xticks(range(cols), labels=list(col_labels), rotation=45 if cols > 4 else 0, ha="right" if cols > 4 else "center")
    ax.set_yticks(range(rows), labels=list(row_labels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    colormap = image.get_cmap()
    font_size = 9 if max(rows, cols) <= 8 else 7
    for i in range(rows):
        for j in range(cols):
            if math.isnan(data[i, j]):
                continue
            red, green, blue, _ = colormap(image.norm(data[i, j]))
            dark_cell = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(j, i, value_format.format(data[i, j] * scale), ha="center", va="center", fontsize=font_size,
                    color="white" if dark_cell else "black")
    return _png(figure)


def short_layer_names(names: Sequence[str]) -> list[str]:
    """Drop the dotted components every name shares at the same position.

    ``model.layers.0.self_attn.q_proj`` and ``model.layers.0.self_attn.v_proj`` become ``0.q_proj`` and ``0.v_proj``.
    """
    split = [name.split(".") for name in names]
    if len(split) < 2 or len({len(parts) for parts in split}) != 1:
        return list(names)
    varying = [k for k in range(len(split[0])) if len({parts[k] for parts in split}) > 1]
    return [".".join(parts[k] for k in varying) for parts in split]


def sparsity_png(sparsity_by_task: dict[str, Sequence[float]], layers: Sequence[str], title: str) -> bytes:
    """Per-layer sparsity (share of near-zero entries, in %) of each task's update, one line per task."""
    labels = short_layer_names(layers)
    figure = Figure(figsize=(min(16.0, max(6.0, 0.3 * len(labels) + 3.0)), 4.5))
    ax = figure.subplots()
    positions = np.arange(len(labels))
    marker = "o" if len(labels) <= 40 else None
    palette = colormaps["tab20" if len(sparsity_by_task) > 10 else "tab10"]  # distinct colours up to 20 tasks
    for k, (task, values) in enumerate(sparsity_by_task.items()):
        ax.plot(positions, [100 * v for v in values], marker=marker, label=task, color=palette(k % palette.N))
    step = max(1, math.ceil(len(labels) / 32))
    ax.set_xticks(positions[::step], labels=labels[::step], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("adapted layer")
    ax.set_ylabel("sparsity (% of entries near zero)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(title="task", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)
