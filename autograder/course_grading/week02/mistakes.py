"""Trusted side: Week 2's catalogue of typical mistakes, named in the feedback.

``sgd_momentum``: wrong versions of torch.optim.SGD's momentum update, as rules the check can
run and recognise, and the hints on a wrong buffer. ``best_rates`` and ``measured_rate``: the
values typical wrong formulas give, each with the sentence that explains it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from course_grading.core.mistakes import Mistake
from course_grading.week02.cases import fit, gd_best, heavy_ball_best

# --- sgd_momentum ------------------------------------------------------------------------------


def momentum_rule(slip: str | None = None) -> Callable:
    """torch.optim.SGD's update, or it with one slip, named as in its mistake's id."""

    def rule(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        wd, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
        late_maximize = slip == "maximize_after_momentum"
        late_decay = slip == "decay_after_momentum"
        d = -g if maximize and not late_maximize else g.clone()
        if wd != 0 and not late_decay:
            d = d + wd * p
        if momentum != 0:
            previous = None if slip == "reset_every_step" else state.get("momentum_buffer")
            if previous is None:
                buf = d.clone() * ((1 - dampening) if slip == "dampening_first_step" else 1.0)
            else:
                weight = (1 - momentum) if slip == "average_not_sum" else (1 - dampening)
                buf = previous * momentum + weight * d
            state["momentum_buffer"] = buf
            if not nesterov or slip == "nesterov_ignored":
                d = buf
            elif slip == "nesterov_raw_gradient":
                d = (-g if maximize else g) + momentum * buf
            elif slip == "nesterov_without_beta":
                d = d + buf
            else:
                d = d + momentum * buf
        if late_decay and wd != 0:
            d = d + wd * p
        if maximize and late_maximize:
            d = -d
        p.add_(d, alpha=-lr)

    return rule


SGD_MOMENTUM_MISTAKES = (
    Mistake(
        "sgd_momentum/reset_every_step",
        "the velocity starts afresh at every step (the buffer is not kept in "
        "self.state[p] between steps), so momentum does nothing.",
        momentum_rule("reset_every_step"),
    ),
    Mistake(
        "sgd_momentum/dampening_first_step",
        "dampening is applied on the first step too; torch starts the buffer with the "
        "gradient itself (buf = g), and dampens only from the second step on.",
        momentum_rule("dampening_first_step"),
    ),
    Mistake(
        "sgd_momentum/average_not_sum",
        "the buffer is an average, β·buf + (1 − β)·g; torch's SGD adds (1 − dampening)·g, the "
        "whole gradient when dampening is 0.",
        momentum_rule("average_not_sum"),
    ),
    Mistake(
        "sgd_momentum/decay_after_momentum",
        "weight decay is added after the momentum buffer; torch adds weight_decay * p to the "
        "gradient first and feeds that sum into the buffer.",
        momentum_rule("decay_after_momentum"),
    ),
    Mistake(
        "sgd_momentum/maximize_after_momentum",
        "maximize negates the whole step (weight decay included) instead of the gradient "
        "alone; torch negates the gradient before anything else.",
        momentum_rule("maximize_after_momentum"),
    ),
    Mistake(
        "sgd_momentum/nesterov_ignored",
        "nesterov=True is ignored: the step is the heavy-ball one, buf, instead of g + β·buf.",
        momentum_rule("nesterov_ignored"),
    ),
    Mistake(
        "sgd_momentum/nesterov_raw_gradient",
        "the Nesterov step adds β·buf to the raw gradient; torch adds it to the gradient "
        "with weight decay included, d = g + λp, stepping along d + β·buf.",
        momentum_rule("nesterov_raw_gradient"),
    ),
    Mistake(
        "sgd_momentum/nesterov_without_beta",
        "the Nesterov look-ahead adds the buffer unscaled, g + buf; torch steps along g + β·buf.",
        momentum_rule("nesterov_without_beta"),
    ),
)

# Added when the student's SGD raised a shape error: one buffer shared by several parameters.
SHARED_BUFFER_ERRORS = ("size of tensor", "match the broadcast shape")
SHARED_BUFFER_HINT = (
    " Each parameter needs its own velocity buffer, shaped like it: keep it in "
    "self.state[p]['momentum_buffer'], not one per group or per optimizer."
)


def shared_buffer_hint(message: str) -> str:
    """A failure message of the runs against torch, with :data:`SHARED_BUFFER_HINT` added
    where it shows a shape error (the student's SGD raised one)."""
    if any(phrase in message for phrase in SHARED_BUFFER_ERRORS):
        return message + SHARED_BUFFER_HINT
    return message


def lr_in_buffer_hint(key: str, value: torch.Tensor, want: torch.Tensor, group: dict) -> str | None:
    """The buffer check's hint (core.buffers.BufferHint): lr folded into the buffer."""
    lr = group.get("lr", 1.0)
    if key == "momentum_buffer" and lr != 1 and torch.allclose(value, lr * want, rtol=1e-6):
        return (
            "the buffer holds lr times torch's velocity (the learning rate is inside the "
            "buffer). The parameters come out the same while lr stays fixed, but the buffer "
            "is not torch's: a checkpoint or a learning-rate schedule gives another run. "
            "Keep buf = β·buf + (1 − dampening)·g and step p -= lr·buf."
        )
    return None


# --- best_rates --------------------------------------------------------------------------------


def gd_best_mistakes(spectrum: Sequence[float]) -> tuple[dict[str, float], dict[str, float]]:
    """What typical wrong step sizes and rates of gradient descent give: sentence -> value."""
    lo, hi = min(spectrum), max(spectrum)
    kappa = hi / lo
    step_sizes = {
        "2/λmax is where gradient descent starts to diverge, not its best step "
        "size; the best one balances the slowest and the fastest direction: "
        "2/(λ1 + λn).": 2.0 / hi,
        "1/λmax is best for the steepest direction alone; the best step size "
        "balances both ends: 2/(λ1 + λn).": 1.0 / hi,
        "1/λ1 diverges along the steep direction.": 1.0 / lo,
    }
    rates = {
        "(√κ − 1)/(√κ + 1) is the heavy ball's rate, not gradient descent's.": heavy_ball_best(
            spectrum
        )[2],
        "1 − 1/κ is the rate at step size 1/λn, not at the best one.": 1 - 1 / kappa,
        "κ is λn/λ1, the largest eigenvalue over the smallest.": (1 / kappa - 1) / (1 / kappa + 1),
    }
    return step_sizes, rates


def heavy_ball_best_mistakes(spectrum: Sequence[float]) -> tuple[dict[str, float], ...]:
    """Typical wrong step sizes, momenta and rates of the heavy ball: sentence -> value."""
    lo, hi = math.sqrt(min(spectrum)), math.sqrt(max(spectrum))
    return (
        {
            "the step size is (2/(√λ1 + √λn))², squared.": 2.0 / (lo + hi),
            "2/(λ1 + λn) is gradient descent's best step size; the heavy ball's is "
            "(2/(√λ1 + √λn))².": gd_best(spectrum)[0],
        },
        {
            "the momentum is ((√λn − √λ1)/(√λn + √λ1))², squared: β is the rate squared.": (hi - lo)
            / (hi + lo),
        },
        {
            "the rate is √β, (√κ − 1)/(√κ + 1), not β itself.": heavy_ball_best(spectrum)[1],
            "(κ − 1)/(κ + 1) is gradient descent's rate.": gd_best(spectrum)[1],
        },
    )


# --- measured_rate -----------------------------------------------------------------------------


def measured_rate_mistakes(distances: np.ndarray, skip: int, expected: float) -> dict[str, float]:
    """What typical wrong fits give on ``distances``: sentence -> value."""
    n = len(distances) - 1
    return {
        "that is the slope of the fitted line; the rate per step is exp(slope).": math.log(
            expected
        ),
        "that is the ratio of the last two distances; fit a line through all the "
        "steps from `skip` on.": distances[-1] / distances[-2],
        "that is (d_last / d_skip)^(1/steps), from two points only; fit a least-squares "
        "line through all of them.": (distances[-1] / distances[skip]) ** (1 / (n - skip)),
        "the fit should start at step `skip` (and keep the true step numbers).": fit(distances, 0),
        "use the natural logarithm with exp (or log10 with 10**): the two must match.": 10
        ** math.log(expected),
    }


def distances_mistakes(trajectory: Any, landscape: Any, expected: np.ndarray) -> dict[str, Any]:
    """What typical wrong distances_to_minimum give: sentence -> values."""
    return {
        "these are squared distances; take the square root.": expected**2,
        "these are distances from the origin; measure from landscape.minimum.": (
            np.linalg.norm(trajectory.path, axis=1)
        ),
        "these are loss gaps; the exercise asks for distances in parameter space.": (
            trajectory.losses - landscape.minimum_loss
        ),
    }
