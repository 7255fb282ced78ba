"""The course's real data set: scikit-learn's handwritten digits, shipped inside the package.

1,797 grey 8x8 images of the digits 0-9 (from the UCI "Optical Recognition of Handwritten
Digits" data). They come with scikit-learn, so nothing is downloaded at run time, and they are
small enough to train on a 1-CPU Binder in seconds.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DataSplit", "all_digits", "load_digits"]


@dataclass(frozen=True)
class DataSplit:
    """Training and validation tensors: features ``X_*`` (float) and class labels ``y_*`` (long)."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor


def load_digits(
    val_fraction: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32
) -> DataSplit:
    """The digits as a shuffled train/validation split, pixels scaled to [0, 1].

    The split is fixed by ``seed``, so every student and every grader sees the same one.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    X, y = all_digits(dtype)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(y) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return DataSplit(X[train], y[train], X[val], y[val])


def all_digits(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit in scikit-learn's order: pixels scaled to [0, 1] (``dtype``) and labels."""
    table = torch.from_numpy(_digits_table())
    return table[:, :-1].to(dtype) / 16.0, table[:, -1].to(torch.long)


def _digits_table() -> np.ndarray:
    """scikit-learn's ``digits.csv.gz`` (64 pixels, then the label, per row), read as its own
    ``load_digits`` reads it but without importing scikit-learn, which takes seconds."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the digits come with scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    with gzip.open(path, "rt") as rows:
        return np.loadtxt(rows, delimiter=",")
