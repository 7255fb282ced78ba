"""Trusted side: Week 7's cases and reference answers.

``model_state_memory``: the ZeRO paper's formula (Section 5), its Figure 1 and the grid of its
Table 1. ``zero1``: the parameter sets the partition is checked on, the data-parallel runs, and
the same runs without sharding, in this process: one optimizer trained on every rank's batches.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch.nn.functional import cross_entropy

from course_grading.week07.produce_ranks import (
    Snapshots,
    ZeroCase,
    batch,
    make_model,
    optimizer_class,
    optimizer_params,
    snapshot,
)

# --- model_state_memory ----------------------------------------------------------------------

# The ZeRO paper's Figure 1 (7.5B parameters, 64 devices, K = 12), in bytes, and the grid of
# its Table 1: model sizes x data-parallel degrees.
FIGURE_1 = {0: 120e9, 1: 31.40625e9, 2: 16.640625e9, 3: 1.875e9}
FIGURE_1_MODEL = (7.5e9, 64)
TABLE_1_SIZES = (7.5e9, 128e9, 1e12)
TABLE_1_DEVICES = (1, 4, 16, 64, 256, 1024)


def zero_bytes(n_params: float, n_devices: int, stage: int, k: float = 12) -> float:
    """Per-device bytes of model states (ZeRO paper, Section 5): the reference formula."""
    psi, nd = float(n_params), float(n_devices)
    return {
        0: (2 + 2 + k) * psi,
        1: 2 * psi + 2 * psi + k * psi / nd,
        2: 2 * psi + (2 + k) * psi / nd,
        3: (2 + 2 + k) * psi / nd,
    }[stage]


def memory_cases() -> list[tuple[float, int, int, float]]:
    """(n_params, n_devices, stage, k): Figure 1 first, then Table 1, other K, one parameter."""
    psi, nd = FIGURE_1_MODEL
    cases: list[tuple[float, int, int, float]] = [(psi, nd, stage, 12) for stage in FIGURE_1]
    cases += [
        (psi, nd, stage, 12)
        for psi, nd, stage in itertools.product(TABLE_1_SIZES, TABLE_1_DEVICES, range(4))
    ]
    cases += [(3e6, 3, stage, k) for stage in range(4) for k in (4, 8, 16)]
    cases += [(1, 1, stage, 12) for stage in range(4)]
    return cases


def expected_bytes(case: tuple[float, int, int, float]) -> float:
    """The answer for one memory case: the paper's Figure 1 where it applies, else the formula."""
    psi, nd, stage, k = case
    if (psi, nd, k) == (*FIGURE_1_MODEL, 12):
        return FIGURE_1[stage]
    return zero_bytes(psi, nd, stage, k)


# (positional arguments, the argument the ValueError must name)
INVALID_MEMORY_CALLS = (
    ((1e9, 8, 4), "stage"),
    ((1e9, 8, -1), "stage"),
    ((1e9, 0, 1), "n_devices"),
    ((-5.0, 8, 1), "n_params"),
)


# --- zero1: the partition --------------------------------------------------------------------

# The model whose parameters the partition is also checked on (tied weights, a 0-d parameter).
PARTITION_MODEL = ZeroCase("", "SGD", model="tied")
# (parameter sizes, or None for PARTITION_MODEL's parameters; world size)
PARTITION_CASES: tuple[tuple[list[int] | None, int], ...] = (
    ([5, 3, 3, 1], 2),
    ([100, 1, 1, 1, 1, 1], 3),
    ([7, 7, 7, 7, 7], 4),
    ([4, 2], 4),
    ([6, 1, 9], 1),
    ([2, 3, 5, 7, 11, 13, 17, 19], 3),
    (None, 3),
)


def partition_numels(sizes: list[int] | None) -> list[int]:
    """The numel of every parameter the partition is given, in order."""
    if sizes is not None:
        return list(sizes)
    return [p.numel() for p in make_model(PARTITION_MODEL).parameters()]


# --- zero1: runs on several processes --------------------------------------------------------

# A correct answer needs a second or two per launch; a hanging one is stopped after this.
LAUNCH_TIMEOUT_S = 45

STEP_CASES = (
    ZeroCase("SGD with momentum", "SGD", {"lr": 0.05, "momentum": 0.9}, steps=12),
    ZeroCase("AdamW", "AdamW", {"lr": 0.01, "weight_decay": 0.1}, steps=12, seed=1),
    ZeroCase(
        "an optimizer class that is not in torch.optim",
        "SignMomentum",
        {"lr": 0.01, "beta": 0.8},
        steps=8,
        seed=2,
    ),
)
MODEL_CASES = (
    ZeroCase(
        "tied weights, a frozen layer and a 0-dimensional parameter",
        "Adam",
        {"lr": 0.02},
        model="tied",
        frozen=True,
        steps=10,
        seed=3,
    ),
    ZeroCase(
        "two param groups with their own settings",
        "SGD",
        {"lr": 0.05, "momentum": 0.5},
        groups={"lr": 0.2, "momentum": 0.9, "weight_decay": 0.01},
        steps=10,
        seed=4,
    ),
)
MEMORY_CASE = ZeroCase(
    "Adam without weight decay", "Adam", {"lr": 0.01}, model="tied", frozen=True, steps=3, seed=5
)
STATE_DICT_CASE = ZeroCase(
    "AdamW with two param groups, checkpointed",
    "AdamW",
    {"lr": 0.01, "weight_decay": 0.05},
    model="tied",
    groups={"lr": 0.03, "weight_decay": 0.0},
    steps=9,
    seed=6,
    checkpoint_at=5,
)


def reference_run(case: ZeroCase, world_size: int, summed: bool = False) -> dict[str, Any]:
    """One optimizer, all ranks' batches: the mean (``summed``: the sum) of their losses.

    The parameters after every step, the state dict at ``case.checkpoint_at`` and the bytes
    of the whole optimizer state at the end.
    """
    model = make_model(case)
    optimizer = optimizer_class(case.optimizer)(optimizer_params(model, case), **case.kwargs)
    snaps: Snapshots = [snapshot(model)]
    checkpoint = None
    for step in range(case.steps):
        optimizer.zero_grad()
        for rank in range(world_size):
            X, y = batch(case, step, rank)
            loss = cross_entropy(model(X), y)
            (loss if summed else loss / world_size).backward()
        optimizer.step()
        snaps.append(snapshot(model))
        if case.checkpoint_at == step + 1:
            checkpoint = copy.deepcopy(optimizer.state_dict())
    return {"snapshots": snaps, "state_dict": checkpoint, "state_bytes": _state_bytes(optimizer)}


def references(cases: tuple[ZeroCase, ...] | list[ZeroCase], world_size: int) -> list[dict]:
    """For each case, the unsharded run and (under ``"summed"``) the one that sums the losses."""
    found = []
    for case in cases:
        run = reference_run(case, world_size)
        run["summed"] = reference_run(case, world_size, summed=True)["snapshots"]
        found.append(run)
    return found


def state_dict_layout(state_dict: dict[str, Any]) -> dict[int, dict[str, list[int]]]:
    """What the ranks need to know of a full state dict: each position's tensor shapes."""
    return {
        index: {key: list(value.shape) for key, value in state.items() if torch.is_tensor(value)}
        for index, state in state_dict["state"].items()
    }


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total
