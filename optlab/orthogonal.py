"""Singular values of update matrices and the odd polynomials of Newton–Schulz (Week 8).

Everything here is measured or computed exactly (SVD, float64), to look at what an update does to
each direction of a weight matrix; the Newton–Schulz iteration itself is the students' exercise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes

from optlab.plots import COLORS

__all__ = [
    "MUON_COEFFICIENTS",
    "CLASSIC_COEFFICIENTS",
    "singular_values",
    "polar_factor",
    "top_share",
    "odd_polynomial",
    "iterate_polynomial",
    "plot_spectra",
    "plot_top_share",
]

# torch.optim.Muon's quintic (Keller Jordan's coefficients) and the classic cubic Newton–Schulz.
MUON_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.775, 2.0315)
CLASSIC_COEFFICIENTS: tuple[float, float, float] = (1.5, -0.5, 0.0)

# Iterated values beyond this are shown as "escaped" (nan) instead of overflowing.
ESCAPE = 1e6


def singular_values(matrix: torch.Tensor) -> np.ndarray:
    """The singular values of a 2-D tensor, largest first, computed in float64."""
    if matrix.ndim != 2:
        raise ValueError(f"expected a matrix, got a tensor of shape {tuple(matrix.shape)}")
    return torch.linalg.svdvals(matrix.detach().double()).numpy()


def polar_factor(matrix: torch.Tensor, rtol: float = 1e-7) -> torch.Tensor:
    """The exact orthogonalization U Vᵀ of ``matrix = U S Vᵀ`` (its polar factor), in float64.

    Directions whose singular value is below ``rtol`` times the largest are left at zero, as
    Newton–Schulz leaves them: a matrix of rank r gets r singular values of 1, the rest 0.
    """
    if matrix.ndim != 2:
        raise ValueError(f"expected a matrix, got a tensor of shape {tuple(matrix.shape)}")
    U, S, Vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    keep = S > rtol * S.max() if S.numel() and S.max() > 0 else torch.zeros_like(S, dtype=bool)
    return (U[:, keep] @ Vh[keep, :]).reshape(matrix.shape)


def top_share(sigma: np.ndarray) -> np.ndarray:
    """Share of the squared Frobenius norm held by the top 1, 2, ... singular directions."""
    energy = np.sort(np.asarray(sigma, dtype=float))[::-1] ** 2
    total = energy.sum()
    return np.cumsum(energy) / total if total > 0 else np.zeros_like(energy)


def odd_polynomial(sigma: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    """p(σ) = a σ + b σ³ + c σ⁵ for the coefficients (a, b, c)."""
    a, b, c = coefficients
    s = np.asarray(sigma, dtype=float)
    return a * s + b * s**3 + c * s**5


def iterate_polynomial(sigma: np.ndarray, coefficients: Sequence[float], steps: int) -> np.ndarray:
    """p applied ``steps`` times to each σ; values that escape past 10⁶ become nan."""
    values = np.asarray(sigma, dtype=float).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(int(steps)):
            values = odd_polynomial(values, coefficients)
            values[~(np.abs(values) < ESCAPE)] = np.nan
    return values


def plot_spectra(
    ax: Axes, spectra: Mapping[str, np.ndarray], normalize: bool = True, floor: float = 1e-4
) -> None:
    """Each spectrum's singular values against their rank, divided by its largest if normalize.

    Values below ``floor`` (directions the update does not move at all) are drawn at the floor.
    """
    for color, (label, sigma) in zip(COLORS, spectra.items(), strict=False):
        s = np.sort(np.asarray(sigma, dtype=float))[::-1]
        if normalize and s[0] > 0:
            s = s / s[0]
        ax.plot(np.arange(1, s.size + 1), np.maximum(s, floor), color=color, lw=2, label=label)
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 2 if normalize else None)
    ax.set_xlabel("direction (singular value rank)")
    ax.set_ylabel("σᵢ / σ₁" if normalize else "σᵢ")


def plot_top_share(ax: Axes, spectra: Mapping[str, np.ndarray]) -> None:
    """Each spectrum's :func:`top_share` against k, the number of top directions (log x)."""
    for color, (label, sigma) in zip(COLORS, spectra.items(), strict=False):
        share = top_share(sigma)
        ax.plot(np.arange(1, share.size + 1), share, color=color, lw=2, label=label)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("top k directions")
    ax.set_ylabel("share of the squared norm")
