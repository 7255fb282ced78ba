"""Small models used by the notebooks and by the checks that grade them."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["mlp"]


def mlp(
    sizes: tuple[int, ...] = (64, 32, 10), seed: int = 0, dtype: torch.dtype = torch.float32
) -> nn.Sequential:
    """A ReLU multi-layer perceptron with layer widths ``sizes``, initialised from ``seed``."""
    if len(sizes) < 2:
        raise ValueError(f"sizes needs an input and an output width, got {sizes}")
    layers: list[nn.Module] = []
    with torch.random.fork_rng():  # seed the weights without touching the caller's RNG
        torch.manual_seed(seed)
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(n_in, n_out, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers)
