"""Drive any ``torch.optim``-style optimizer over a landscape and record its path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from optlab.landscapes import Landscape

__all__ = ["Trajectory", "run_trajectory"]

# A run whose loss passes this bound has diverged; it is cut there instead of filling the
# plot with overflow.
DIVERGENCE_LOSS = 1e6


@dataclass
class Trajectory:
    """The points an optimizer visited and the loss at each.

    ``path`` has shape ``(n_steps + 1, dim)`` and starts at the start point; ``losses`` has
    shape ``(n_steps + 1,)``. After a divergence both are padded with NaN, so every trajectory
    of a run has the same length and plots simply stop where the optimizer blew up.
    """

    path: np.ndarray
    losses: np.ndarray
    diverged_at: int | None = None

    @property
    def final_point(self) -> np.ndarray:
        """The last finite point of the path."""
        finite = np.isfinite(self.losses)
        return self.path[np.flatnonzero(finite)[-1]]


def run_trajectory(
    landscape: Landscape,
    optimizer_cls: Callable[..., Any],
    n_steps: int = 100,
    start: Sequence[float] | None = None,
    **hyperparameters: Any,
) -> Trajectory:
    """Run ``optimizer_cls`` for ``n_steps`` on ``landscape`` and return the trajectory.

    ``optimizer_cls`` is any class with the ``torch.optim`` interface (``torch.optim.SGD`` or a
    student's own class); ``hyperparameters`` go to its constructor. The gradient at every step
    is the landscape's exact one, so differences between runs come from the optimizers alone.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    point = torch.tensor(landscape.start if start is None else start, dtype=torch.float64).reshape(
        landscape.dim
    )
    point.requires_grad_(True)
    optimizer = optimizer_cls([point], **hyperparameters)

    path = np.full((n_steps + 1, landscape.dim), np.nan)
    losses = np.full(n_steps + 1, np.nan)
    diverged_at = None
    for step in range(n_steps + 1):
        current = point.detach()
        loss = float(landscape.loss(current))
        if not np.isfinite(loss) or abs(loss) > DIVERGENCE_LOSS:
            diverged_at = step
            break
        path[step] = current.numpy()
        losses[step] = loss
        if step == n_steps:
            break
        optimizer.zero_grad()
        point.grad = landscape.grad(current).clone()
        optimizer.step()
    return Trajectory(path=path, losses=losses, diverged_at=diverged_at)
