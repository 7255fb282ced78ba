"""Hidden checks for Week 3: the running average of squared gradients, and RMSprop.

Exercise ids (grade ids in the notebook start with them): ``square_average``, ``rmsprop_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from course_grading.buffer_checks import (
    check_buffers,
    require_torch_optimizer,
)
from course_grading.compare import CheckFailed
from course_grading.interface_checks import (
    check_closure,
    check_signature,
    check_value_errors,
)
from course_grading.mistakes import Mistake
from course_grading.optimizer_checks import check_against_torch
from course_grading.runs import Case

RMSPROP_DEFAULTS = {
    "lr": 1e-2,
    "alpha": 0.99,
    "eps": 1e-8,
    "weight_decay": 0,
    "momentum": 0,
    "centered": False,
    "maximize": False,
}


# --- square_average ----------------------------------------------------------------------------


def _square_averages(grads: list[torch.Tensor], alpha: float) -> list[torch.Tensor]:
    v = torch.zeros_like(grads[0])
    out = []
    for g in grads:
        v = alpha * v + (1 - alpha) * g * g
        out.append(v.clone())
    return out


def check_square_average(square_average: Callable) -> None:
    """v_t = alpha v_{t-1} + (1 - alpha) g_t², from v_0 = 0, for several alphas and shapes."""
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(11)
    for alpha, shape, steps in ((0.9, (3,), 6), (0.99, (2, 4), 12), (0.5, (5,), 4), (0.0, (3,), 3)):
        grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(steps)]
        expected = _square_averages(grads, alpha)
        where = f"with alpha={alpha} and {steps} gradients of shape {tuple(shape)}"
        try:
            got = list(square_average([g.clone() for g in grads], alpha))
        except Exception as exc:
            raise CheckFailed(
                f"square_average raised {type(exc).__name__}: {exc} {where}."
            ) from None
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
            hints = {
                "alpha and 1 - alpha are swapped: alpha weighs the old average, 1 - alpha the "
                "new g².": _square_averages(grads, 1 - alpha),
                "the average starts at the first g² instead of at zero: v_1 should be "
                "(1 - alpha) g_1².": _square_averages_from_first(grads, alpha),
                "the gradients are averaged, not their squares.": _plain_averages(grads, alpha),
            }
            for sentence, values in hints.items():
                if all(
                    torch.as_tensor(a, dtype=torch.float64).shape == b.shape
                    and torch.allclose(torch.as_tensor(a, dtype=torch.float64), b, rtol=1e-10)
                    for a, b in zip(got, values, strict=True)
                ):
                    message += f" This looks like a typical mistake: {sentence}"
                    break
            raise CheckFailed(message)


def _square_averages_from_first(grads: list[torch.Tensor], alpha: float) -> list[torch.Tensor]:
    v = grads[0] * grads[0]
    out = [v.clone()]
    for g in grads[1:]:
        v = alpha * v + (1 - alpha) * g * g
        out.append(v.clone())
    return out


def _plain_averages(grads: list[torch.Tensor], alpha: float) -> list[torch.Tensor]:
    v = torch.zeros_like(grads[0])
    out = []
    for g in grads:
        v = alpha * v + (1 - alpha) * g
        out.append(v.clone())
    return out


# --- rmsprop_step ------------------------------------------------------------------------------


def _rmsprop_rule(
    eps_inside: bool = False,
    decay_after_normalising: bool = False,
    momentum_before_normalising: bool = False,
    centered_without_mean: bool = False,
    alpha_swapped: bool = False,
    starts_at_first_square: bool = False,
    maximize_ignored: bool = False,
) -> Callable:
    """torch.optim.RMSprop's update, or one typical wrong version of it."""

    def rule(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        wd, momentum, centered = group["weight_decay"], group["momentum"], group["centered"]
        if alpha_swapped:
            alpha = 1 - alpha
        d = -g if group["maximize"] and not maximize_ignored else g.clone()
        if wd != 0 and not decay_after_normalising:
            d = d + wd * p
        first = "square_avg" not in state
        if first:
            state["square_avg"] = torch.zeros_like(p)
            state["grad_avg"] = torch.zeros_like(p)
            state["momentum_buffer"] = torch.zeros_like(p)
        if first and starts_at_first_square:
            state["square_avg"] = d * d
        else:
            state["square_avg"] = alpha * state["square_avg"] + (1 - alpha) * d * d
        variance = state["square_avg"]
        if centered:
            state["grad_avg"] = alpha * state["grad_avg"] + (1 - alpha) * d
            if not centered_without_mean:
                variance = variance - state["grad_avg"] ** 2
        scale = (variance + eps).sqrt() if eps_inside else variance.sqrt() + eps
        if momentum_before_normalising and momentum > 0:
            state["momentum_buffer"] = momentum * state["momentum_buffer"] + d
            p.add_(state["momentum_buffer"] / scale, alpha=-lr)
            return
        step = d / scale
        if decay_after_normalising and wd != 0:
            step = step + wd * p
        if momentum > 0:
            state["momentum_buffer"] = momentum * state["momentum_buffer"] + step
            step = state["momentum_buffer"]
        p.add_(step, alpha=-lr)

    return rule


RMSPROP_STEP_MISTAKES = (
    Mistake(
        "rmsprop_step/eps_inside_sqrt",
        "eps is added inside the square root, sqrt(v + eps); torch adds it outside, sqrt(v) + eps.",
        _rmsprop_rule(eps_inside=True),
    ),
    Mistake(
        "rmsprop_step/alpha_swapped",
        "alpha and 1 − alpha are swapped: the running average should keep alpha of the old "
        "value and add (1 − alpha)·g².",
        _rmsprop_rule(alpha_swapped=True),
    ),
    Mistake(
        "rmsprop_step/starts_at_first_square",
        "square_avg starts at the first g² instead of at zero; torch starts it at zero, so "
        "the first average is (1 − alpha)·g².",
        _rmsprop_rule(starts_at_first_square=True),
    ),
    Mistake(
        "rmsprop_step/decay_after_normalising",
        "weight decay is added after the gradient is divided by sqrt(v); torch adds "
        "weight_decay * p to the gradient first, so it enters the average and is normalised too.",
        _rmsprop_rule(decay_after_normalising=True),
    ),
    Mistake(
        "rmsprop_step/momentum_before_normalising",
        "the momentum buffer collects raw gradients and is divided by sqrt(v) afterwards; "
        "torch's buffer collects the normalised steps g / (sqrt(v) + eps).",
        _rmsprop_rule(momentum_before_normalising=True),
    ),
    Mistake(
        "rmsprop_step/centered_without_mean",
        "with centered=True the variance must subtract the squared running mean of the "
        "gradients, v − m², with m = alpha·m + (1 − alpha)·g kept in state['grad_avg'].",
        _rmsprop_rule(centered_without_mean=True),
    ),
    Mistake(
        "rmsprop_step/maximize_ignored",
        "maximize=True is ignored: negate the gradient first, before weight decay.",
        _rmsprop_rule(maximize_ignored=True),
    ),
)


def _check_rmsprop(RMSprop: Any, cases: list[Case]) -> None:
    __tracebackhide__ = True
    try:
        check_against_torch(
            RMSprop,
            "RMSprop",
            "torch.optim.RMSprop",
            cases,
            RMSPROP_STEP_MISTAKES,
            RMSPROP_DEFAULTS,
        )
    except CheckFailed as failure:
        message = str(failure)
        if "is nan with your optimizer" in message:
            message += (
                " Your update produced NaN, typically the square root of a negative number: "
                "square_avg must average g² (never negative), and the centered variance is "
                "square_avg − grad_avg², with grad_avg averaging the gradients themselves."
            )
        elif "size of tensor" in message or "match the broadcast shape" in message:
            message += " Each parameter needs its own buffers, shaped like it, in self.state[p]."
        raise CheckFailed(message) from None


def check_rmsprop_step_basic(RMSprop: Any) -> None:
    """Constructor signature, the default settings, other alpha and eps, over many steps."""
    __tracebackhide__ = True
    require_torch_optimizer(RMSprop, "RMSprop")
    check_signature(RMSprop, "RMSprop", RMSPROP_DEFAULTS, "torch.optim.RMSprop")
    _check_rmsprop(
        RMSprop,
        [
            Case("default arguments"),
            Case("a small alpha", {"lr": 0.003, "alpha": 0.9}),
            Case("a large eps", {"lr": 0.01, "eps": 0.01}),
        ],
    )


def check_rmsprop_step_weight_decay(RMSprop: Any) -> None:
    """Weight decay and maximize."""
    __tracebackhide__ = True
    _check_rmsprop(
        RMSprop,
        [
            Case("weight decay", {"lr": 0.005, "weight_decay": 0.1}),
            Case("maximize", {"lr": 0.002, "maximize": True}),
            Case(
                "maximize with weight decay", {"lr": 0.002, "weight_decay": 0.05, "maximize": True}
            ),
        ],
    )


def check_rmsprop_step_momentum(RMSprop: Any) -> None:
    """Momentum, alone and with weight decay."""
    __tracebackhide__ = True
    _check_rmsprop(
        RMSprop,
        [
            Case("momentum 0.9", {"lr": 0.001, "momentum": 0.9}),
            Case(
                "momentum with weight decay and a small alpha",
                {"lr": 0.002, "momentum": 0.5, "weight_decay": 0.01, "alpha": 0.9},
            ),
        ],
    )


def check_rmsprop_step_centered(RMSprop: Any) -> None:
    """The centered variant, alone and with momentum, weight decay and maximize."""
    __tracebackhide__ = True
    _check_rmsprop(
        RMSprop,
        [
            Case("centered", {"lr": 0.003, "centered": True, "alpha": 0.9}),
            Case(
                "centered with momentum",
                {"lr": 0.001, "centered": True, "momentum": 0.9, "alpha": 0.9},
            ),
            Case(
                "centered with the default alpha, weight decay and maximize",
                {"lr": 0.002, "centered": True, "weight_decay": 0.05, "maximize": True},
            ),
        ],
    )


def check_rmsprop_step_state(RMSprop: Any) -> None:
    """Frozen parameters, param groups, buffers in self.state, checkpoints, step(closure)."""
    __tracebackhide__ = True
    require_torch_optimizer(RMSprop, "RMSprop")
    _check_rmsprop(
        RMSprop,
        [
            Case("a frozen first layer", {"lr": 0.005, "momentum": 0.5}, frozen=(0,)),
            Case(
                "param groups with their own settings",
                {"lr": 0.003},
                groups=(
                    {"layers": (0,), "alpha": 0.9, "centered": True},
                    {"layers": (2, 4), "lr": 0.001, "momentum": 0.8, "weight_decay": 0.01},
                ),
            ),
        ],
    )
    cases = [
        Case(
            "RMSprop buffers, in two param groups",
            {"lr": 0.002, "momentum": 0.9},
            steps=16,
            groups=({"layers": (0,), "centered": True}, {"layers": (2, 4), "alpha": 0.9}),
        ),
        Case("RMSprop buffers, a frozen layer", {"lr": 0.003}, frozen=(2,)),
    ]
    check_buffers(RMSprop, "RMSprop", "torch.optim.RMSprop", cases, stop=8)
    check_closure(RMSprop, "RMSprop", {"lr": 0.1})


def check_rmsprop_step_validation(RMSprop: Any) -> None:
    """Invalid hyperparameters raise ValueError naming the parameter, as torch.optim.RMSprop."""
    __tracebackhide__ = True
    check_value_errors(
        RMSprop,
        "RMSprop",
        invalid=[
            ({"lr": -0.01}, ("lr", "learning rate")),
            ({"lr": 0.01, "alpha": -0.5}, ("alpha",)),
            ({"lr": 0.01, "eps": -1e-8}, ("eps", "epsilon")),
            ({"lr": 0.01, "weight_decay": -1e-4}, ("weight_decay", "weight decay")),
            ({"lr": 0.01, "momentum": -0.9}, ("momentum",)),
        ],
        valid=[
            {"lr": 0.0},
            {"lr": 0.01, "alpha": 0.0, "eps": 0.0},
            {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1},
        ],
    )
