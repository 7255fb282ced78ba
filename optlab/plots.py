"""Static plots of landscapes, trajectories and loss curves (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

from optlab.landscapes import Landscape
from optlab.trajectories import Trajectory

__all__ = ["draw_landscape", "plot_trajectories", "loss_gap", "COLORS"]

COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")

# Loss gaps are drawn on a log axis; this floor keeps an exact hit of the minimum visible.
GAP_FLOOR = 1e-12


def loss_gap(landscape: Landscape, losses: np.ndarray) -> np.ndarray:
    """Distance of each loss from the landscape's minimum, floored for a log axis."""
    return np.maximum(losses - landscape.minimum_loss, GAP_FLOOR)


def draw_landscape(ax: Axes, landscape: Landscape, resolution: int = 200) -> None:
    """Draw the landscape on ``ax``: a curve for 1-D, filled log-spaced contours for 2-D."""
    if landscape.dim == 1:
        ((lo, hi),) = landscape.bounds
        x = torch.linspace(lo, hi, resolution * 2, dtype=torch.float64)
        ax.plot(x.numpy(), landscape.loss(x[:, None]).numpy(), color="0.3", lw=1.5)
        ax.set_xlabel("x")
        ax.set_ylabel("loss")
    else:
        (x0, x1), (y0, y1) = landscape.bounds
        xs = torch.linspace(x0, x1, resolution, dtype=torch.float64)
        ys = torch.linspace(y0, y1, resolution, dtype=torch.float64)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        z = landscape.loss(torch.stack([gx, gy], dim=-1)).numpy()
        gap = np.maximum(z - landscape.minimum_loss, 1e-3)
        levels = np.geomspace(gap.min(), gap.max(), 25)
        ax.contourf(gx.numpy(), gy.numpy(), gap, levels=levels, cmap="Greys_r", norm="log")
        ax.contour(gx.numpy(), gy.numpy(), gap, levels=levels[::3], colors="0.4", linewidths=0.4)
        ax.plot(*landscape.minimum, marker="*", color="gold", markersize=14, mec="k")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    ax.set_title(landscape.name)


def plot_trajectories(
    landscape: Landscape, trajectories: Mapping[str, Trajectory], title: str = ""
) -> plt.Figure:
    """One figure: the paths on the landscape (left) and the loss gap per step (right)."""
    fig, (ax_map, ax_loss) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    draw_landscape(ax_map, landscape)
    for color, (name, traj) in zip(COLORS, trajectories.items(), strict=False):
        if landscape.dim == 1:
            ax_map.plot(traj.path[:, 0], traj.losses, "o-", ms=3, color=color, label=name)
        else:
            ax_map.plot(traj.path[:, 0], traj.path[:, 1], "o-", ms=2, color=color, label=name)
        ax_loss.semilogy(loss_gap(landscape, traj.losses), color=color, label=name)
    ax_map.legend(loc="best")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss − minimum")
    if title:
        fig.suptitle(title)
    return fig
