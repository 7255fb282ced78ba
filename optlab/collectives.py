"""Pictures of collective operations: what every rank holds before and after.

A demo run returns, for each rank, ``{operation: (before, after)}`` with 1-D tensors. A tensor
shorter than the full row is that rank's piece of it (as in ``reduce_scatter`` and
``all_gather``) and is drawn in the columns it covers: rank ``r``'s piece of length ``m`` covers
columns ``r*m`` to ``(r+1)*m - 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

__all__ = ["holdings", "draw_collectives"]


def holdings(tensors: Sequence[torch.Tensor], width: int) -> np.ndarray:
    """A ``(ranks, width)`` grid of values, NaN where a rank holds nothing."""
    grid = np.full((len(tensors), width), np.nan)
    for rank, tensor in enumerate(tensors):
        values = tensor.detach().cpu().double().flatten().numpy()
        if values.size == width:
            grid[rank] = values
        else:
            start = rank * values.size
            grid[rank, start : start + values.size] = values
    return grid


def _draw_grid(ax: Axes, grid: np.ndarray, vmin: float, vmax: float, title: str) -> None:
    ax.imshow(np.ma.masked_invalid(grid), cmap="YlGnBu", vmin=vmin, vmax=vmax, aspect="auto")
    for (row, col), value in np.ndenumerate(grid):
        if np.isfinite(value):
            dark = (value - vmin) / max(vmax - vmin, 1e-12) > 0.6
            ax.text(col, row, f"{value:g}", ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_yticks(range(grid.shape[0]), [f"rank {r}" for r in range(grid.shape[0])], fontsize=8)
    ax.set_xticks([])
    ax.set_xticks(np.arange(-0.5, grid.shape[1]), minor=True)
    ax.set_yticks(np.arange(-0.5, grid.shape[0]), minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    ax.set_title(title, fontsize=9)


def draw_collectives(
    results: Sequence[Mapping[str, tuple[torch.Tensor, torch.Tensor]]],
) -> plt.Figure:
    """One row per operation: the ranks' tensors before (left) and after (right)."""
    operations = list(results[0])
    width = max(max(t.numel() for t in pair) for r in results for pair in r.values())
    grids = {
        op: [holdings([r[op][i] for r in results], width) for i in (0, 1)] for op in operations
    }
    finite = np.concatenate([g[np.isfinite(g)] for pair in grids.values() for g in pair])
    vmin, vmax = float(finite.min()), float(finite.max())
    fig, axes = plt.subplots(
        len(operations), 2, figsize=(9, 1.1 + 0.45 * len(results) * len(operations)),
        layout="constrained", squeeze=False,
    )  # fmt: skip
    for row, op in enumerate(operations):
        before, after = grids[op]
        _draw_grid(axes[row, 0], before, vmin, vmax, f"{op}: before")
        _draw_grid(axes[row, 1], after, vmin, vmax, f"{op}: after")
    return fig
