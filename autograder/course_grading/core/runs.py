"""Both sides: the training runs that optimizer checks compare, a small MLP on fixed batches.

The student's optimizer (in the sandbox) and ``torch.optim``'s (on the trusted side) go through
this same code, so that the two runs differ only by the optimizer. The batches are inputs that
the trusted side hands in; nothing here says which cases are checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

# Layer widths of the model every optimizer check trains: 64 inputs (8x8 digits), 10 classes.
MODEL_SIZES = (64, 24, 16, 10)

Snapshots = list[dict[str, torch.Tensor]]
Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


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

    def to_request(self) -> dict[str, Any]:
        """The case as plain data, as it travels to the sandbox (its name stays outside)."""
        data = asdict(self)
        del data["name"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """A case back from :meth:`to_request` (lists become tuples again)."""
        data = {"name": "", **data}
        data["groups"] = tuple(data.get("groups", ()))
        data["frozen"] = tuple(data.get("frozen", ()))
        return cls(**data)


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


def run_case(optimizer_cls: Callable[..., Any], case: Case, batches: Batches) -> Snapshots:
    """Train the case's model with ``optimizer_cls``; the parameters after every step.

    The returned list has ``case.steps + 1`` entries (the first is the initial state), each a
    dict from parameter name (``"0.weight"``, ...) to a detached copy.
    """
    model = make_model(case.seed)
    optimizer = optimizer_cls(optimizer_params(model, case), **case.kwargs)
    loss_fn = nn.CrossEntropyLoss()
    snaps = [snapshot(model)]
    for X, y in batches[: case.steps]:
        optimizer.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        optimizer.step()
        snaps.append(snapshot(model))
    return snaps


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}
