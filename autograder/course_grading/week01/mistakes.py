"""Trusted side: Week 1's catalogue of typical mistakes, named in the feedback.

``sgd_step``: wrong versions of SGD's update, as rules the check can run and recognise.
``max_stable_lr``: wrong thresholds, as functions of the Hessian.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_grading.core.mistakes import Mistake


def _sgd_rule(
    decay_after: bool = False,
    lr_twice: bool = False,
    decay_without_lr: bool = False,
    decay_sign: float = 1.0,
    ignore_maximize: bool = False,
    negate_after_decay: bool = False,
) -> Callable:
    def rule(p: torch.Tensor, g: torch.Tensor, _state: dict, group: dict) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        maximize = group["maximize"] and not ignore_maximize
        d = -g if maximize and not negate_after_decay else g
        if decay_after or decay_without_lr:
            decay = -wd * (lr if decay_after else 1.0)
            p.add_(d, alpha=-lr)
            p.add_(p if decay_after else p.detach().clone(), alpha=decay)
            return
        d = d + decay_sign * wd * p
        if maximize and negate_after_decay:
            d = -d
        p.add_(d, alpha=-(lr * lr if lr_twice else lr))

    return rule


SGD_STEP_MISTAKES = (
    Mistake(
        "sgd_step/decay_after_step",
        "weight decay is applied after the gradient step, to the already updated weights; "
        "add weight_decay * p to the gradient first, then take one step.",
        _sgd_rule(decay_after=True),
    ),
    Mistake(
        "sgd_step/lr_twice",
        "the learning rate is applied twice (the step is lr * lr * gradient).",
        _sgd_rule(lr_twice=True),
    ),
    Mistake(
        "sgd_step/decay_without_lr",
        "the weight-decay term is not multiplied by the learning rate.",
        _sgd_rule(decay_without_lr=True),
    ),
    Mistake(
        "sgd_step/decay_sign",
        "weight decay has the wrong sign: it pushes weights away from zero.",
        _sgd_rule(decay_sign=-1.0),
    ),
    Mistake(
        "sgd_step/maximize_ignored",
        "maximize=True is ignored: the step still goes downhill.",
        _sgd_rule(ignore_maximize=True),
    ),
    Mistake(
        "sgd_step/maximize_negates_decay",
        "with maximize=True the weight-decay term is negated too; torch negates only the "
        "gradient, so decay still pulls weights towards zero.",
        _sgd_rule(negate_after_decay=True),
    ),
)

# (threshold from the Hessian, what it means): thresholds a wrong max_stable_lr computes.
MAX_STABLE_LR_MISTAKES: tuple[tuple[Callable[[torch.Tensor], float], str], ...] = (
    (
        lambda h: 1.0 / float(torch.linalg.eigvalsh(h).max()),
        "that is 1/λmax: the threshold is twice that.",
    ),
    (
        lambda h: 2.0 / float(torch.linalg.eigvalsh(h).min()),
        "that uses the smallest eigenvalue; the largest one limits lr.",
    ),
    (
        lambda h: 2.0 / float(h.diagonal().max()),
        "that uses the largest diagonal entry, not the largest eigenvalue.",
    ),
)
