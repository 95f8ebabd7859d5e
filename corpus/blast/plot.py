"""The balance map: grid-cell occupancy of the feature map before and after balancing, as a PNG."""

from __future__ import annotations

import io

import numpy as np


def balance_map_png(
    before: np.ndarray, after: np.ndarray, grid_size: int, entropy_before: float, entropy_after: float
) -> bytes:
    """Two heatmaps (log counts per cell, x = first UMAP axis): series per cell, then drawn series per cell.

    Drawn with matplotlib's Agg canvas directly (no pyplot state, no display), without a timestamp in the
    metadata, so the same counts give the same bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    panels = (
        (before, f"input series per cell (entropy {entropy_before:.2f} bits)"),
        (after, f"balanced draws per cell (entropy {entropy_after:.2f} bits)"),
    )
    for i, (counts, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        grid = np.log10(1.0 + np.asarray(counts, dtype=np.float64).reshape(grid_size, grid_size))
        im = ax.imshow(
            grid.T,
            origin="lower",
            cmap="viridis",
            interpolation="nearest",
            extent=(0, grid_size, 0, grid_size),
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("UMAP 1 cell")
        ax.set_ylabel("UMAP 2 cell")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="log10(1 + count)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
