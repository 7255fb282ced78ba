"""optlab.data: the digits as scikit-learn gives them, split the same way every time."""

from __future__ import annotations

import pytest
import torch

from optlab.data import all_digits, load_digits


def test_the_digits_are_scikit_learns() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    split = load_digits(dtype=torch.float64)
    X = torch.cat([split.X_train, split.X_val])
    y = torch.cat([split.y_train, split.y_val])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    order = torch.cat([order[359:], order[:359]])  # training rows first, then validation
    assert torch.equal(X, torch.tensor(bunch.data)[order] / 16.0)
    assert torch.equal(y, torch.tensor(bunch.target)[order])
    assert (len(split.y_train), len(split.y_val)) == (1438, 359)
    assert split.X_train.dtype == torch.float64 and split.y_train.dtype == torch.long


def test_the_split_is_fixed_by_the_seed_and_checked() -> None:
    assert torch.equal(load_digits().X_val, load_digits().X_val)
    assert not torch.equal(load_digits(seed=1).y_val, load_digits().y_val)
    with pytest.raises(ValueError, match="val_fraction"):
        load_digits(val_fraction=1.0)


def test_all_digits_are_scikit_learns_in_its_order() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    X, y = all_digits()
    assert torch.equal(X, torch.tensor(bunch.data, dtype=torch.float64) / 16.0)
    assert torch.equal(y, torch.tensor(bunch.target, dtype=torch.long))
