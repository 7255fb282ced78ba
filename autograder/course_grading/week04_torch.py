"""Week 4's torch.optim references, computed once per grading kernel in a fresh interpreter.

Every reference the week's checks compare with (the standard runs of ``check_against_torch``,
runs where some parameters get no gradient on some steps, the state tensors torch keeps, the
bytes of that state) is computed in one isolated process that never sees student code, and
cached: one interpreter start instead of one per check. The runs themselves are defined here
too, so that the student's optimizer and torch's go through the same code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from course_grading.isolated import run_isolated
from course_grading.optimizer_checks import batches as check_batches
from course_grading.runs import Case, Snapshots, make_model, run_case

Batches = list[tuple[torch.Tensor, torch.Tensor]]

# The standard runs of check_against_torch, per check: (torch.optim class name, cases).
ADAM_CASES = {
    "basic": (
        Case("default arguments"),
        Case("a larger learning rate and other betas", {"lr": 0.01, "betas": (0.8, 0.95)}),
        Case("a large eps", {"lr": 0.01, "eps": 0.01}, steps=15),
    ),
    "branches": (
        Case("weight decay", {"lr": 0.01, "weight_decay": 0.1}),
        Case("amsgrad", {"lr": 0.01, "betas": (0.8, 0.9), "amsgrad": True}, steps=40),
        Case("maximize", {"lr": 0.005, "maximize": True}, steps=15),
        Case(
            "maximize with weight decay and amsgrad",
            {"lr": 0.005, "weight_decay": 0.5, "amsgrad": True, "maximize": True},
            steps=30,
        ),
    ),
    "groups_frozen": (
        Case("a frozen first layer", {"lr": 0.01, "weight_decay": 0.05}, frozen=(0,)),
        Case(
            "param groups with their own settings",
            {"lr": 0.005},
            groups=(
                {"layers": (0,), "lr": 0.02, "amsgrad": True},
                {"layers": (2, 4), "betas": (0.8, 0.9), "weight_decay": 0.1},
            ),
        ),
    ),
}
ADAMW_CASES = {
    "basic": (
        Case("default arguments"),
        Case("a larger learning rate and weight decay", {"lr": 0.01, "weight_decay": 0.1}),
        Case("strong decay", {"lr": 0.05, "weight_decay": 0.5, "betas": (0.8, 0.95)}),
    ),
    "branches": (
        Case("no weight decay", {"lr": 0.01, "weight_decay": 0.0}, steps=15),
        Case("amsgrad", {"lr": 0.01, "betas": (0.8, 0.9), "amsgrad": True}, steps=40),
        Case("maximize", {"lr": 0.005, "weight_decay": 0.1, "maximize": True}, steps=15),
        Case(
            "maximize with amsgrad",
            {"lr": 0.01, "weight_decay": 0.2, "amsgrad": True, "maximize": True},
            steps=30,
        ),
    ),
    "groups_frozen": (
        Case("a frozen first layer", {"lr": 0.01, "weight_decay": 0.1}, frozen=(0,)),
        Case(
            "param groups with their own settings",
            {"lr": 0.01},
            groups=(
                {"layers": (0,), "weight_decay": 0.0},
                {"layers": (2, 4), "lr": 0.02, "weight_decay": 0.3, "amsgrad": True},
            ),
        ),
    ),
}
# check_against_torch trains on make_batches(BATCHES); the cached runs must use the same.
BATCHES = 40

# The runs with missing gradients: layer 0 gets none on every third step, the last layer none
# during the first steps, so parameters take different numbers of steps.
INTERMITTENT_STEPS = 18
STATE_STEPS = 7

# State-bytes measurements: optimizer, constructor arguments (besides lr), dtypes and sizes.
STATE_BYTES_OPTIMIZERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("SGD", {}),
    ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"weight_decay": 0.1}),
    ("RMSprop", {}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("Adam", {}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"weight_decay": 0.1, "betas": (0.8, 0.9)}),
    ("AdamW", {}),
    ("AdamW", {"amsgrad": True, "weight_decay": 0.1}),
)
STATE_BYTES_DTYPES = ("float32", "float64", "bfloat16", "float16")
STATE_BYTES_SIZES = (1, 1000, 12345)

# The torch.optim runs whose state the Adam and AdamW checks compare with.
STATE_CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
)
INTERMITTENT_CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Adam", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _train(
    optimizer_cls: Callable[..., Any],
    kwargs: dict[str, Any],
    batches: Batches,
    drop: Callable[[int, int], bool] = lambda _step, _layer: False,
    frozen: Sequence[int] = (),
) -> tuple[nn.Sequential, Any, Snapshots]:
    """Train the checks' model; ``drop(step, layer)`` removes that layer's gradients."""
    model = make_model(0)
    for i in frozen:
        model[i].requires_grad_(False)
    optimizer = optimizer_cls(list(model.parameters()), **kwargs)
    loss_fn = nn.CrossEntropyLoss()
    snaps = [_snapshot(model)]
    for step, (X, y) in enumerate(batches):
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        for i, layer in enumerate(model):
            if drop(step, i):
                for p in layer.parameters():
                    p.grad = None
        optimizer.step()
        snaps.append(_snapshot(model))
    return model, optimizer, snaps


def _intermittent(step: int, layer: int) -> bool:
    return (layer == 0 and step % 3 == 2) or (layer == 4 and step < 4)


def run_intermittent(
    optimizer_cls: Callable[..., Any], kwargs: dict[str, Any], batches: Batches | None = None
) -> Snapshots:
    """A run in which some parameters get no gradient on some steps."""
    batches = (batches or check_batches(BATCHES))[:INTERMITTENT_STEPS]
    return _train(optimizer_cls, kwargs, batches, _intermittent)[2]


def run_for_state(
    optimizer_cls: Callable[..., Any], kwargs: dict[str, Any], batches: Batches | None = None
) -> tuple[nn.Sequential, Any]:
    """The model and optimizer after ``STATE_STEPS`` steps with a frozen first layer."""
    batches = (batches or check_batches(BATCHES))[:STATE_STEPS]
    model, optimizer, _ = _train(optimizer_cls, kwargs, batches, frozen=(0,))
    return model, optimizer


def state_by_name(model: nn.Module, optimizer: Any) -> dict[str, dict[str, Any]]:
    """The optimizer's state per parameter name (copies); parameters without state left out."""
    out = {}
    for name, p in model.named_parameters():
        state = optimizer.state.get(p, {}) if hasattr(optimizer.state, "get") else {}
        if len(state):
            out[name] = {
                str(k): (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                for k, v in state.items()
            }
    return out


def measure_state_bytes(name: str, kwargs: dict[str, Any], numel: int, dtype: str) -> int:
    """Bytes of the tensors torch.optim's ``name`` keeps for one parameter after one step."""
    p = torch.randn(numel).to(getattr(torch, dtype)).requires_grad_(True)
    optimizer = getattr(torch.optim, name)([p], lr=1e-3, **kwargs)
    p.grad = torch.randn(numel).to(p.dtype)
    optimizer.step()
    return sum(
        v.numel() * v.element_size() for v in optimizer.state[p].values() if torch.is_tensor(v)
    )


def case_key(reference: str, case: Case) -> str:
    """The key under which :func:`references` files the standard run of ``case``."""
    return repr((reference, case))


def compute_references(batches: Batches) -> dict[str, Any]:
    """What :func:`references` asks the isolated process for."""
    refs: dict[str, Any] = {"runs": {}, "intermittent": {}, "state": {}, "state_bytes": {}}
    for name, table in (("Adam", ADAM_CASES), ("AdamW", ADAMW_CASES)):
        for cases in table.values():
            for case in cases:
                run = run_case(getattr(torch.optim, name), case, batches)
                refs["runs"][case_key(f"torch.optim.{name}", case)] = run
    for name, kwargs in INTERMITTENT_CASES:
        refs["intermittent"][_key(name, kwargs)] = run_intermittent(
            getattr(torch.optim, name), kwargs, batches
        )
    for name, kwargs in STATE_CASES:
        model, optimizer = run_for_state(getattr(torch.optim, name), kwargs, batches)
        refs["state"][_key(name, kwargs)] = state_by_name(model, optimizer)
    for name, kwargs in STATE_BYTES_OPTIMIZERS:
        for dtype in STATE_BYTES_DTYPES:
            for numel in STATE_BYTES_SIZES:
                key = f"{_key(name, kwargs)}|{dtype}|{numel}"
                refs["state_bytes"][key] = measure_state_bytes(name, kwargs, numel, dtype)
    return refs


def _key(name: str, kwargs: dict[str, Any]) -> str:
    return f"{name}{sorted(kwargs.items())}"


def reference_key(name: str, kwargs: dict[str, Any]) -> str:
    """The key under which :func:`references` files the run of ``name`` with ``kwargs``."""
    return _key(name, kwargs)


@functools.cache
def references() -> dict[str, Any]:
    """All of Week 4's torch.optim references, computed once in an isolated process."""
    __tracebackhide__ = True
    # The batches travel with the request: the child then needs no scikit-learn.
    batches = list(check_batches(BATCHES))
    return run_isolated("course_grading.week04_torch:compute_references", batches)
