"""PNG figures a run logs: a confusion matrix and a Shapley heatmap of contexts against texts.

Both draw on a bare ``matplotlib.figure.Figure`` rendered by the Agg canvas: no display, no pyplot global state, no
backend switch in the caller's process, and nothing left open for a long training loop to leak.
The heatmap shows phi[i, j], the Shapley value of context i for text j in one batch: how much adding context i to a
coalition of contexts raises text j's alignment score on average. A diverging colour map centred on 0 makes helpful
(positive) and harmful (negative) contexts read apart; the diagonal holds each text's own context.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

_ANNOTATE_MAX = 16  # write values into cells only while they stay legible


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def truncate_label(text: str, max_chars: int = 32) -> str:
    """One line, at most ``max_chars`` characters, an ellipsis where it was cut."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= max_chars else flat[: max_chars - 1].rstrip() + "…"


def _as_matrix(values, rows: int, cols: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (rows, cols):
        raise ValueError(f"{what}: expected a matrix of shape ({rows}, {cols}) to match the labels, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: matrix contains NaN or infinite values")
    return array


def confusion_matrix_png(
    labels: Sequence[str],
    matrix,
    path: str | Path,
    title: str = "Confusion matrix",
    normalize: bool = True,
    max_label_chars: int = 32,
) -> Path:
    """Gold labels on rows, predictions on columns. Colours are row-normalised (recall per gold label) when
    ``normalize``; cells show raw counts while the matrix is small enough to read them."""
    n = len(labels)
    counts = _as_matrix(matrix, n, n, "confusion_matrix_png")
    row_totals = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0) if normalize else counts

    side = max(4.0, 0.45 * n + 2.5)
    fig, ax = _new_figure(side + 1.0, side)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of gold row" if normalize else "count")
    tick_labels = [truncate_label(label, max_label_chars) for label in labels]
    ax.set_xticks(range(n), tick_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), tick_labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    if n <= _ANNOTATE_MAX:
        for i in range(n):
            for j in range(n):
                dark = shown[i, j] > (0.5 if normalize else shown.max() / 2)
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def shapley_heatmap_png(
    phi,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    title: str = "Shapley value of context i for text j",
    max_label_chars: int = 32,
) -> Path:
    """phi (N_contexts, N_texts): rows are contexts, columns texts, both labelled by their (truncated) text."""
    values = _as_matrix(phi, len(row_labels), len(col_labels), "shapley_heatmap_png")
    # Symmetric limits keep 0 at the centre of the diverging map; a constant-zero matrix still gets a valid range.
    limit = float(np.abs(values).max()) or 1.0

    rows, cols = values.shape
    fig, ax = _new_figure(max(5.0, 0.5 * cols + 4.0), max(4.0, 0.45 * rows + 2.5))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Shapley value")
    ax.set_xticks(
        range(cols), [truncate_label(t, max_label_chars) for t in col_labels], rotation=60, ha="right", fontsize=8
    )
    ax.set_yticks(range(rows), [truncate_label(t, max_label_chars) for t in row_labels], fontsize=8)
    ax.set_xlabel("text")
    ax.set_ylabel("context")
    ax.set_title(title)
    if rows <= _ANNOTATE_MAX and cols <= _ANNOTATE_MAX:
        for i in range(rows):
            for j in range(cols):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(values[i, j]) > 0.6 * limit else "black",
                )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
