"""Trusted side: Week 4's cases and the ``torch.optim`` references computed on them.

The references run here, in the grading process, where no student code runs: the same
training code as the student's optimizer (:mod:`course_grading.week04.produce`), with the
real ``torch.optim`` class in its place.
"""

from __future__ import annotations

from typing import Any

import torch

from course_grading.core.references import digit_batches
from course_grading.core.runs import Batches, Case, Snapshots
from course_grading.core.tables import CaseTable, frozen_and_grouped
from course_grading.week04 import produce

# The runs against torch.optim.Adam and torch.optim.AdamW, per test cell.
ADAM_CASES: CaseTable = {
    "adam_test_basic": (
        Case("default arguments"),
        Case("a larger learning rate and other betas", {"lr": 0.01, "betas": (0.8, 0.95)}),
        Case("a large eps", {"lr": 0.01, "eps": 0.01}, steps=15),
    ),
    "adam_test_branches": (
        Case("weight decay", {"lr": 0.01, "weight_decay": 0.1}),
        Case("amsgrad", {"lr": 0.01, "betas": (0.8, 0.9), "amsgrad": True}, steps=40),
        Case("maximize", {"lr": 0.005, "maximize": True}, steps=15),
        Case(
            "maximize with weight decay and amsgrad",
            {"lr": 0.005, "weight_decay": 0.5, "amsgrad": True, "maximize": True},
            steps=30,
        ),
    ),
    "adam_test_groups_frozen": frozen_and_grouped(
        frozen={"lr": 0.01, "weight_decay": 0.05},
        grouped={"lr": 0.005},
        first={"lr": 0.02, "amsgrad": True},
        rest={"betas": (0.8, 0.9), "weight_decay": 0.1},
    ),
}
ADAMW_CASES: CaseTable = {
    "adamw_test_basic": (
        Case("default arguments"),
        Case("a larger learning rate and weight decay", {"lr": 0.01, "weight_decay": 0.1}),
        Case("strong decay", {"lr": 0.05, "weight_decay": 0.5, "betas": (0.8, 0.95)}),
    ),
    "adamw_test_branches": (
        Case("no weight decay", {"lr": 0.01, "weight_decay": 0.0}, steps=15),
        Case("amsgrad", {"lr": 0.01, "betas": (0.8, 0.9), "amsgrad": True}, steps=40),
        Case("maximize", {"lr": 0.005, "weight_decay": 0.1, "maximize": True}, steps=15),
        Case(
            "maximize with amsgrad",
            {"lr": 0.01, "weight_decay": 0.2, "amsgrad": True, "maximize": True},
            steps=30,
        ),
    ),
    "adamw_test_groups_frozen": frozen_and_grouped(
        frozen={"lr": 0.01, "weight_decay": 0.1},
        grouped={"lr": 0.01},
        first={"weight_decay": 0.0},
        rest={"lr": 0.02, "weight_decay": 0.3, "amsgrad": True},
    ),
}

# --- parameters that get no gradient on some steps ---------------------------------------------

INTERMITTENT_STEPS = 18
# Per step, the layers whose gradients are removed: layer 0 on every third step, the last
# layer during the first steps, so parameters take different numbers of steps.
INTERMITTENT_DROP = tuple(
    tuple(layer for layer in (0, 4) if (layer == 0 and step % 3 == 2) or (layer == 4 and step < 4))
    for step in range(INTERMITTENT_STEPS)
)
INTERMITTENT_CASES: dict[str, dict[str, Any]] = {
    "Adam": {"lr": 0.01},
    "AdamW": {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
}


def intermittent_batches() -> Batches:
    """The batches of the runs with missing gradients."""
    return digit_batches()[:INTERMITTENT_STEPS]


def intermittent_reference(name: str, kwargs: dict[str, Any]) -> Snapshots:
    """``torch.optim.<name>``'s run with the gradients of :data:`INTERMITTENT_DROP` removed."""
    cls = getattr(torch.optim, name)
    return produce.train(cls, kwargs, intermittent_batches(), INTERMITTENT_DROP)[2]


# --- the state after some steps, and a state_dict round trip -----------------------------------

STATE_STEPS = 7
STATE_FROZEN = (0,)
# The torch.optim.Adam runs whose state the Adam check compares with.
STATE_CASES: tuple[dict[str, Any], ...] = (
    {"lr": 0.01},
    {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01},
)
ROUND_TRIP = {
    "kwargs": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01},
    "steps": 12,
    "stop": 6,
    "seed": 3,
    "resume_seed": 99,
}


def state_batches() -> Batches:
    """The batches of the runs whose state is compared."""
    return digit_batches()[:STATE_STEPS]


def state_reference(kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """torch.optim.Adam's state per parameter name after :data:`STATE_STEPS` steps."""
    found = produce.state_after(torch.optim.Adam, kwargs, state_batches(), STATE_FROZEN)
    return found["state"]


# --- train_resumed -------------------------------------------------------------------------------

RESUME_BATCHES = 14
RESUME_STOP = 6
RESUME_SEED = 5
# (optimizer, keywords) with the optimizer state resumed, and without it.
RESUME_WITH_STATE: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Adam", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
)
RESUME_WITHOUT_STATE: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Adam", {"lr": 0.01}),
    ("AdamW", {"lr": 0.003}),
)

# --- state_bytes -------------------------------------------------------------------------------

# Optimizer, constructor arguments (besides lr), dtypes and sizes measured on torch.optim.
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
# A size no memory holds: the count must come from a rule, extrapolated from the measurements.
STATE_BYTES_BIG = 7_000_000_000
# The student's own optimizers: keywords (besides lr), dtypes, lr, steps, frozen layers.
OWN_STATE_BYTES_KWARGS: tuple[dict[str, Any], ...] = ({}, {"amsgrad": True})
OWN_STATE_BYTES_DTYPES = ("float32", "float64")
OWN_STATE_BYTES_LR = 0.01
OWN_STATE_BYTES_STEPS = 2
OWN_STATE_BYTES_FROZEN = (0,)


def measure_state_bytes(name: str, kwargs: dict[str, Any], numel: int, dtype: str) -> int:
    """Bytes of the tensors torch.optim's ``name`` keeps for one parameter after one step."""
    p = torch.randn(numel).to(getattr(torch, dtype)).requires_grad_(True)
    optimizer = getattr(torch.optim, name)([p], lr=1e-3, **kwargs)
    p.grad = torch.randn(numel).to(p.dtype)
    optimizer.step()
    return sum(
        v.numel() * v.element_size() for v in optimizer.state[p].values() if torch.is_tensor(v)
    )


def state_bytes_calls() -> list[dict[str, Any]]:
    """Every call of the student's state_bytes the check makes, in order."""
    return [
        {"name": name, "numel": numel, "dtype": dtype, "kwargs": kwargs}
        for name, kwargs in STATE_BYTES_OPTIMIZERS
        for dtype in STATE_BYTES_DTYPES
        for numel in (*STATE_BYTES_SIZES, STATE_BYTES_BIG)
    ]


def state_bytes_reference() -> list[int]:
    """For each of :func:`state_bytes_calls`, the bytes torch.optim holds (extrapolated for
    :data:`STATE_BYTES_BIG` from the measurements at 1 and 1000 elements)."""
    expected = []
    for name, kwargs in STATE_BYTES_OPTIMIZERS:
        for dtype in STATE_BYTES_DTYPES:
            measured = {n: measure_state_bytes(name, kwargs, n, dtype) for n in STATE_BYTES_SIZES}
            per_element = (measured[1000] - measured[1]) // 999
            measured[STATE_BYTES_BIG] = measured[1] + per_element * (STATE_BYTES_BIG - 1)
            expected += [measured[n] for n in (*STATE_BYTES_SIZES, STATE_BYTES_BIG)]
    return expected
