"""Trusted side: Week 3's catalogue of typical mistakes, named in the feedback.

``square_average``: wrong running averages, as functions of the gradients and alpha.
``rmsprop_step``: wrong versions of RMSprop's update, as rules the check can run and recognise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_grading.core.mistakes import Mistake

# --- square_average ----------------------------------------------------------------------------


def square_averages(grads: list[torch.Tensor], alpha: float) -> list[torch.Tensor]:
    """The right answer: v_t = alpha v_{t-1} + (1 - alpha) g_t², from v_0 = 0."""
    v = torch.zeros_like(grads[0])
    out = []
    for g in grads:
        v = alpha * v + (1 - alpha) * g * g
        out.append(v.clone())
    return out


def _square_averages_swapped(grads: list[torch.Tensor], alpha: float) -> list[torch.Tensor]:
    return square_averages(grads, 1 - alpha)


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


# (what it means, the averages a wrong square_average computes), tried in this order.
SQUARE_AVERAGE_MISTAKES: tuple[
    tuple[str, Callable[[list[torch.Tensor], float], list[torch.Tensor]]], ...
] = (
    (
        "alpha and 1 - alpha are swapped: alpha weighs the old average, 1 - alpha the new g².",
        _square_averages_swapped,
    ),
    (
        "the average starts at the first g² instead of at zero: v_1 should be (1 - alpha) g_1².",
        _square_averages_from_first,
    ),
    ("the gradients are averaged, not their squares.", _plain_averages),
)


# --- rmsprop_step ------------------------------------------------------------------------------


def _rmsprop_rule(slip: str | None = None) -> Callable:
    """torch.optim.RMSprop's update, or it with one slip, named as in its mistake's id."""

    def rule(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        wd, momentum, centered = group["weight_decay"], group["momentum"], group["centered"]
        if slip == "alpha_swapped":
            alpha = 1 - alpha
        d = -g if group["maximize"] and slip != "maximize_ignored" else g.clone()
        if wd != 0 and slip != "decay_after_normalising":
            d = d + wd * p
        first = "square_avg" not in state
        if first:
            state["square_avg"] = torch.zeros_like(p)
            state["grad_avg"] = torch.zeros_like(p)
            state["momentum_buffer"] = torch.zeros_like(p)
        if first and slip == "starts_at_first_square":
            state["square_avg"] = d * d
        else:
            state["square_avg"] = alpha * state["square_avg"] + (1 - alpha) * d * d
        variance = state["square_avg"]
        if centered:
            state["grad_avg"] = alpha * state["grad_avg"] + (1 - alpha) * d
            if slip != "centered_without_mean":
                variance = variance - state["grad_avg"] ** 2
        scale = (variance + eps).sqrt() if slip == "eps_inside_sqrt" else variance.sqrt() + eps
        if slip == "momentum_before_normalising" and momentum > 0:
            state["momentum_buffer"] = momentum * state["momentum_buffer"] + d
            p.add_(state["momentum_buffer"] / scale, alpha=-lr)
            return
        step = d / scale
        if slip == "decay_after_normalising" and wd != 0:
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
        _rmsprop_rule("eps_inside_sqrt"),
    ),
    Mistake(
        "rmsprop_step/alpha_swapped",
        "alpha and 1 − alpha are swapped: the running average should keep alpha of the old "
        "value and add (1 − alpha)·g².",
        _rmsprop_rule("alpha_swapped"),
    ),
    Mistake(
        "rmsprop_step/starts_at_first_square",
        "square_avg starts at the first g² instead of at zero; torch starts it at zero, so "
        "the first average is (1 − alpha)·g².",
        _rmsprop_rule("starts_at_first_square"),
    ),
    Mistake(
        "rmsprop_step/decay_after_normalising",
        "weight decay is added after the gradient is divided by sqrt(v); torch adds "
        "weight_decay * p to the gradient first, so it enters the average and is normalised too.",
        _rmsprop_rule("decay_after_normalising"),
    ),
    Mistake(
        "rmsprop_step/momentum_before_normalising",
        "the momentum buffer collects raw gradients and is divided by sqrt(v) afterwards; "
        "torch's buffer collects the normalised steps g / (sqrt(v) + eps).",
        _rmsprop_rule("momentum_before_normalising"),
    ),
    Mistake(
        "rmsprop_step/centered_without_mean",
        "with centered=True the variance must subtract the squared running mean of the "
        "gradients, v − m², with m = alpha·m + (1 − alpha)·g kept in state['grad_avg'].",
        _rmsprop_rule("centered_without_mean"),
    ),
    Mistake(
        "rmsprop_step/maximize_ignored",
        "maximize=True is ignored: negate the gradient first, before weight decay.",
        _rmsprop_rule("maximize_ignored"),
    ),
)


def rmsprop_hint(message: str) -> str:
    """A failure message of the runs against torch, with a hint added where it shows NaN or a
    shape mismatch (also when the student's code raised)."""
    if "is nan with your optimizer" in message:
        return message + (
            " Your update produced NaN, typically the square root of a negative number: "
            "square_avg must average g² (never negative), and the centered variance is "
            "square_avg − grad_avg², with grad_avg averaging the gradients themselves."
        )
    if "size of tensor" in message or "match the broadcast shape" in message:
        return message + " Each parameter needs its own buffers, shaped like it, in self.state[p]."
    return message
