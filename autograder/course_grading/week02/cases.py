"""Trusted side: Week 2's cases, and reference answers for ``best_rates`` and ``measured_rate``.

The runs of the student's SGD against torch.optim.SGD; the formulas of Distill's "Why Momentum
Really Works" for the best step sizes and rates on a quadratic, the least-squares rate fit, the
sequences and the trajectories the checks use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from course_grading.core.runs import Case
from course_grading.core.tables import CaseTable

# --- sgd_momentum ------------------------------------------------------------------------------

# The heavy ball that several runs start from, each adding what it checks.
HEAVY_BALL = {"lr": 0.05, "momentum": 0.9}
# The runs against torch.optim.SGD, per test cell.
SGD_MOMENTUM_CASES: CaseTable = {
    "sgd_momentum_test_basic": (
        Case("default arguments"),
        Case("heavy-ball momentum 0.9", HEAVY_BALL),
        Case("momentum 0.5 with a large learning rate", {"lr": 0.3, "momentum": 0.5}),
    ),
    "sgd_momentum_test_dampening": (
        Case("momentum with dampening 0.5", {**HEAVY_BALL, "dampening": 0.5}),
        Case("momentum with weight decay", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05}),
        Case(
            "momentum with dampening and weight decay",
            {"lr": 0.1, "momentum": 0.7, "dampening": 0.3, "weight_decay": 0.02},
        ),
        Case(
            "momentum with maximize and weight decay",
            {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.1, "maximize": True},
        ),
    ),
    "sgd_momentum_test_nesterov": (
        Case("Nesterov momentum 0.9", {**HEAVY_BALL, "nesterov": True}),
        Case(
            "Nesterov momentum with weight decay",
            {"lr": 0.1, "momentum": 0.6, "nesterov": True, "weight_decay": 0.05},
        ),
        Case(
            "Nesterov momentum with maximize",
            {"lr": 0.02, "momentum": 0.9, "nesterov": True, "maximize": True},
        ),
    ),
    "sgd_momentum_test_state": (
        Case("a frozen first layer with momentum", HEAVY_BALL, frozen=(0,)),
        Case(
            "param groups with their own momentum settings",
            HEAVY_BALL,
            groups=(
                {"layers": (0,), "momentum": 0.0},
                {"layers": (2, 4), "lr": 0.1, "dampening": 0.5},
            ),
        ),
    ),
}
# The runs whose momentum buffers are compared with torch's after BUFFER_STOP steps.
BUFFER_CASES = (
    Case(
        "momentum buffers, in two param groups",
        {**HEAVY_BALL, "weight_decay": 0.01},
        steps=16,
        groups=({"layers": (0,), "dampening": 0.2}, {"layers": (2, 4), "nesterov": True}),
    ),
    Case("momentum buffers, a frozen layer", {"lr": 0.1, "momentum": 0.5}, frozen=(2,)),
)
BUFFER_STOP = 8

# sgd_momentum_test_validation: keywords the constructor must refuse (with the names one of
# which its ValueError must mention), and keywords it must accept.
SGD_INVALID = (
    ({"lr": -0.01}, ("lr", "learning rate")),
    ({"lr": 0.1, "momentum": -0.5}, ("momentum",)),
    ({"lr": 0.1, "weight_decay": -1e-4}, ("weight_decay", "weight decay")),
    ({"lr": 0.1, "nesterov": True}, ("nesterov",)),
    ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, ("nesterov",)),
)
SGD_VALID = (
    {"lr": 0.0},
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.5},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "momentum": 0.0, "dampening": 0.3},
)

# --- best_rates --------------------------------------------------------------------------------

# Eigenvalue sets of the hidden checks: several condition numbers, any order, more than two.
SPECTRA: tuple[Sequence[float], ...] = (
    (1.0, 10.0),
    (50.0, 0.5),
    (2.0, 3.0),
    (0.01, 1.0),
    (9.0, 1.0, 4.0, 100.0),
    (4.0, 4.0),
)


def gd_best(eigenvalues: Sequence[float]) -> tuple[float, float]:
    """Gradient descent's best step size 2/(λ1+λn) and its rate (κ−1)/(κ+1)."""
    lo, hi = min(eigenvalues), max(eigenvalues)
    kappa = hi / lo
    return 2.0 / (lo + hi), (kappa - 1.0) / (kappa + 1.0)


def heavy_ball_best(eigenvalues: Sequence[float]) -> tuple[float, float, float]:
    """The heavy ball's best step size, momentum and rate (√κ−1)/(√κ+1)."""
    lo, hi = math.sqrt(min(eigenvalues)), math.sqrt(max(eigenvalues))
    root_kappa = hi / lo
    return (
        (2.0 / (lo + hi)) ** 2,
        ((hi - lo) / (hi + lo)) ** 2,
        (root_kappa - 1.0) / (root_kappa + 1.0),
    )


def spectrum_argument(spectrum: Sequence[float], as_tensor: bool) -> Any:
    """How a spectrum is handed to the student's function: a list, or a float64 tensor."""
    return torch.tensor(spectrum, dtype=torch.float64) if as_tensor else list(spectrum)


# --- measured_rate -----------------------------------------------------------------------------


def fit(distances: np.ndarray, skip: int) -> float:
    """exp of the least-squares slope of log(distance) against the step, from ``skip`` on."""
    steps = np.arange(len(distances))[skip:]
    return math.exp(np.polyfit(steps, np.log(distances[skip:]), 1)[0])


def sequences() -> list[tuple[str, Any, int]]:
    """(what it is, the distances, skip): a list or a NumPy array each."""
    k = np.arange(41, dtype=np.float64)
    rng = np.random.default_rng(3)
    return [
        ("a geometric sequence", 3.0 * 0.9 ** k[:31], 0),
        ("a sequence that zig-zags around a geometric one", 5 * 0.7**k * (1 + 0.3 * (-1) ** k), 0),
        ("a Python list", [2.0 * 0.5**i for i in range(20)], 0),
        ("a slow and a fast part, skip=10", 0.95**k + 10.0 * 0.5**k, 10),
        ("a noisy sequence, skip=5", 0.8**k * np.exp(0.2 * rng.standard_normal(k.size)), 5),
        ("a sequence with a transient, skip=20", (1 + k) * 0.6**k, 20),
    ]


# Landscapes (an optlab.landscapes class and its keywords) and torch.optim.SGD settings whose
# 40-step trajectories distances_to_minimum measures.
DISTANCE_RUNS: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    ("Quadratic", {"eigenvalues": (1.0, 30.0), "minimum": (1.0, -0.5), "angle": 0.4}, {"lr": 0.05}),
    ("Rosenbrock", {}, {"lr": 1e-3, "momentum": 0.9}),
    ("DipCurve", {}, {"lr": 0.1, "momentum": 0.9}),
)
DISTANCE_STEPS = 40


def distance_runs() -> list[tuple[Any, Any]]:
    """(landscape, trajectory) of every run, the trajectory by torch.optim.SGD."""
    from optlab import landscapes
    from optlab.trajectories import run_trajectory

    runs = []
    for name, fields, hyper in DISTANCE_RUNS:
        landscape = getattr(landscapes, name)(**fields)
        runs.append(
            (landscape, run_trajectory(landscape, torch.optim.SGD, DISTANCE_STEPS, **hyper))
        )
    return runs
