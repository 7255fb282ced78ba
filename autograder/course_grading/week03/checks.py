"""Trusted side: Week 3's hidden checks, by test cell.

Exercise ids (grade ids in the notebook start with them): ``square_average``,
``rmsprop_step``. Week 3 hides every ``torch.optim`` optimizer from the sandbox: the RMSprop
must be the student's own (``torch.optim.Optimizer``, the base class, stays).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from course_grading.core.buffers import buffers
from course_grading.core.checks import CheckFailed, Checks, Part, error_text
from course_grading.core.interface import closure, value_errors
from course_grading.core.optimizers import OptimizerSpec
from course_grading.core.tables import subclass_cells
from course_grading.core.torch_hiding import TORCH_OPTIMIZERS
from course_grading.week03.cases import (
    BUFFER_CASES,
    BUFFER_STOP,
    RMSPROP_INVALID,
    RMSPROP_STEP_CASES,
    RMSPROP_VALID,
)
from course_grading.week03.mistakes import (
    RMSPROP_STEP_MISTAKES,
    SQUARE_AVERAGE_MISTAKES,
    rmsprop_hint,
    square_averages,
)

HIDDEN_TORCH = TORCH_OPTIMIZERS

RMSPROP = OptimizerSpec.of("RMSprop", RMSPROP_STEP_MISTAKES)


def checks() -> Checks:
    """Every test cell's hidden check."""
    return {
        "square_average_test": [square_average()],
        # rmsprop_step_test_state, the table's last cell, also checks buffers and step(closure).
        **subclass_cells(
            RMSPROP,
            RMSPROP_STEP_CASES,
            hint=rmsprop_hint,
            state=[
                buffers(RMSPROP, BUFFER_CASES, stop=BUFFER_STOP),
                closure("RMSprop", {"lr": 0.1}),
            ],
        ),
        "rmsprop_step_test_validation": [value_errors("RMSprop", RMSPROP_INVALID, RMSPROP_VALID)],
    }


# --- square_average ----------------------------------------------------------------------------

# (alpha, shape of every gradient, number of gradients), drawn in this order from one generator.
_SQUARE_AVERAGE_CASES = ((0.9, (3,), 6), (0.99, (2, 4), 12), (0.5, (5,), 4), (0.0, (3,), 3))


def square_average() -> Part:
    """v_t = alpha v_{t-1} + (1 - alpha) g_t², from v_0 = 0, for several alphas and shapes."""
    gen = torch.Generator().manual_seed(11)
    cases = [
        {
            "grads": [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(steps)],
            "alpha": alpha,
        }
        for alpha, shape, steps in _SQUARE_AVERAGE_CASES
    ]
    return Part(
        "week03.produce:square_average_runs",
        judge_square_average,
        inputs={"cases": cases},
        reference=lambda: [square_averages(c["grads"], c["alpha"]) for c in cases],
        context={"cases": cases},
    )


def judge_square_average(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`square_average`."""
    for (alpha, shape, steps), case, expected, outcome in zip(
        _SQUARE_AVERAGE_CASES, part.context["cases"], part.expected, outcomes, strict=True
    ):
        where = f"with alpha={alpha} and {steps} gradients of shape {tuple(shape)}"
        if outcome.get("error"):
            raise CheckFailed(f"square_average raised {error_text(outcome['error'])} {where}.")
        got = list(outcome["averages"])
        if len(got) != steps:
            raise CheckFailed(
                f"{where}, square_average should return {steps} averages, one after each "
                f"gradient; it returned {len(got)}."
            )
        for t, (mine, want) in enumerate(zip(got, expected, strict=True), start=1):
            mine = torch.as_tensor(mine, dtype=torch.float64)
            if mine.shape == want.shape and torch.allclose(mine, want, rtol=1e-10, atol=1e-12):
                continue
            message = f"{where}, the average after gradient {t} differs from the expected one."
            for sentence, wrong in SQUARE_AVERAGE_MISTAKES:
                if _same_averages(got, wrong(case["grads"], alpha)):
                    message += f" This looks like a typical mistake: {sentence}"
                    break
            raise CheckFailed(message)


def _same_averages(got: Sequence[Any], values: Sequence[torch.Tensor]) -> bool:
    return all(
        torch.as_tensor(a, dtype=torch.float64).shape == b.shape
        and torch.allclose(torch.as_tensor(a, dtype=torch.float64), b, rtol=1e-10)
        for a, b in zip(got, values, strict=True)
    )
