"""Training runs that check functions compare: a small MLP on fixed mini-batches of digits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Layer widths of the model every optimizer check trains: 64 inputs (8x8 digits), 10 classes.
MODEL_SIZES = (64, 24, 16, 10)
BATCH_SIZE = 32

Snapshots = list[dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Case:
    """One checked run: constructor arguments, which parameters train, and for how long.

    ``groups`` splits the model into param groups: each entry is a dict of overrides with a
    ``"layers"`` key listing the indices of the ``nn.Sequential`` layers it holds. ``frozen``
    lists layers whose parameters get no gradient (their ``.grad`` stays ``None``).
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 25
    groups: tuple[dict[str, Any], ...] = ()
    frozen: tuple[int, ...] = ()
    seed: int = 0


def make_model(seed: int) -> nn.Sequential:
    """The float64 MLP of every check (float64 keeps rounding far below the tolerances)."""
    layers: list[nn.Module] = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for i, (n_in, n_out) in enumerate(zip(MODEL_SIZES[:-1], MODEL_SIZES[1:], strict=True)):
            layers.append(nn.Linear(n_in, n_out, dtype=torch.float64))
            if i < len(MODEL_SIZES) - 2:
                layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def make_batches(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` mini-batches of real digits (float64), in a fixed order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = torch.tensor(bunch.data, dtype=torch.float64) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (BATCH_SIZE,), generator=g)
        out.append((X[idx], y[idx]))
    return out


def optimizer_params(model: nn.Sequential, case: Case) -> list[Any]:
    """The ``params`` argument for ``case``: a plain list, or a list of param-group dicts."""
    for i in case.frozen:
        for p in model[i].parameters():
            p.requires_grad_(False)
    if not case.groups:
        return list(model.parameters())
    groups = []
    for spec in case.groups:
        group = {k: v for k, v in spec.items() if k != "layers"}
        group["params"] = [p for i in spec["layers"] for p in model[i].parameters()]
        groups.append(group)
    return groups


def run_case(
    optimizer_cls: Callable[..., Any],
    case: Case,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> Snapshots:
    """Train the case's model with ``optimizer_cls``; the parameters after every step.

    The returned list has ``case.steps + 1`` entries (the first is the initial state), each a
    dict from parameter name (``"0.weight"``, ...) to a detached copy.
    """
    model = make_model(case.seed)
    optimizer = optimizer_cls(optimizer_params(model, case), **case.kwargs)
    loss_fn = nn.CrossEntropyLoss()
    snaps = [_snapshot(model)]
    for X, y in batches[: case.steps]:
        optimizer.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        optimizer.step()
        snaps.append(_snapshot(model))
    return snaps


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}
