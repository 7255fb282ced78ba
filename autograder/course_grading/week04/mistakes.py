"""Trusted side: typical wrong versions of Adam and AdamW, as update rules the checks can run.

:func:`adam_rule` builds torch's update with one deliberate deviation (Week 6 builds on it too);
the catalogues below turn each deviation into a :class:`~course_grading.core.mistakes.Mistake`
with the sentence the student reads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_grading.core.tables import MistakeRow, catalogue


def _bias_corrections(t: int, beta1: float, beta2: float, in_float32: bool) -> tuple[float, float]:
    if in_float32:  # 1 - beta**t computed on a float32 step tensor loses digits
        step = torch.tensor(float(t), dtype=torch.float32)
        return float(1 - beta1**step), float(1 - beta2**step)
    return 1 - beta1**t, 1 - beta2**t


def adam_rule(
    decay: str = "l2",
    bias: str = "both",
    eps_inside: bool = False,
    step_offset: int = 0,
    shared_step: bool = False,
    betas_swapped: bool = False,
    amsgrad_max: str = "exp_avg_sq",
    ignore_maximize: bool = False,
    maximize_negates_decay: bool = False,
    float32_bias: bool = False,
) -> Callable:
    """torch's Adam update, with the deviations the keyword arguments name.

    ``decay``: ``"l2"`` (Adam), ``"decoupled"`` (AdamW), ``"decoupled_no_lr"``,
    ``"decoupled_and_l2"``, ``"decoupled_after"``. ``bias``: which moments are bias-corrected
    (``"both"``, ``"none"``, ``"m_only"``). ``amsgrad_max``: the quantity whose running maximum
    is kept (``"exp_avg_sq"`` as torch, ``"corrected"``, ``"grad_sq"``, ``"ignored"``).
    """

    def rule(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if betas_swapped:
            beta1, beta2 = beta2, beta1
        if not state:
            state["step"] = 0
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
            state["v_max"] = torch.zeros_like(p)
        maximize = group["maximize"] and not ignore_maximize
        d = -g if maximize and not maximize_negates_decay else g
        if wd != 0:
            if decay in ("decoupled", "decoupled_and_l2"):
                p.mul_(1 - lr * wd)
            if decay == "decoupled_no_lr":
                p.mul_(1 - wd)
            if decay in ("l2", "decoupled_and_l2"):  # L2 on the (possibly decayed) parameter
                d = d + wd * p
        if maximize and maximize_negates_decay:
            d = -d
        if shared_step:  # one counter for every parameter of the group
            group["_shared_step"] = group.get("_shared_step", 0) + 1
            t = group["_shared_step"]
        else:
            state["step"] += 1
            t = state["step"] + step_offset
        m, v, v_max = state["m"], state["v"], state["v_max"]
        m.mul_(beta1).add_(d, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(d, d, value=1 - beta2)
        bc1, bc2 = _bias_corrections(t, beta1, beta2, float32_bias)
        if bias in ("none", "v_only"):
            bc1 = 1.0
        if bias in ("none", "m_only"):
            bc2 = 1.0
        v_hat = v / bc2
        if group["amsgrad"]:
            if amsgrad_max == "exp_avg_sq":
                torch.maximum(v_max, v, out=v_max)
                v_hat = v_max / bc2
            elif amsgrad_max == "corrected":
                torch.maximum(v_max, v / bc2, out=v_max)
                v_hat = v_max.clone()
            elif amsgrad_max == "grad_sq":
                torch.maximum(v_max, d * d, out=v_max)
                v_hat = v_max / bc2
        denom = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
        p.addcdiv_(m, denom, value=-lr / bc1)
        if decay == "decoupled_after" and wd != 0:
            p.mul_(1 - lr * wd)

    return rule


# The mistakes Adam and AdamW share, their update being the same apart from the decay: rows of
# (name, adam_rule's keywords besides ``decay``, sentence).
_SHARED: tuple[MistakeRow, ...] = (
    (
        "no_bias_correction",
        {"bias": "none"},
        "the moments are not bias-corrected: divide m by (1 - beta1**t) and v by "
        "(1 - beta2**t), or the first steps have the wrong size.",
    ),
    (
        "first_moment_only_corrected",
        {"bias": "m_only"},
        "only the first moment is bias-corrected; v needs its own correction 1 - beta2**t.",
    ),
    (
        "eps_inside_sqrt",
        {"eps_inside": True},
        "eps is added inside the square root; torch adds it outside: sqrt(v_hat) + eps.",
    ),
    (
        "step_shared",
        {"shared_step": True},
        "one step counter is shared by all parameters and advances once per parameter; "
        'each parameter counts its own steps in its state (state["step"]).',
    ),
    (
        "step_off_by_one",
        {"step_offset": 1},
        "the step counter is one ahead: the first step must use t = 1 in the bias "
        "corrections (start at 0 and add 1 before using it).",
    ),
    (
        "betas_swapped",
        {"betas_swapped": True},
        "beta1 and beta2 are swapped: betas[0] averages the gradient, betas[1] its square.",
    ),
    (
        "amsgrad_max_of_corrected",
        {"amsgrad_max": "corrected"},
        "amsgrad keeps the maximum of the bias-corrected v_hat; torch keeps the maximum of "
        "the raw exp_avg_sq and bias-corrects that maximum.",
    ),
    (
        "amsgrad_max_of_grad_sq",
        {"amsgrad_max": "grad_sq"},
        "amsgrad keeps the maximum of the squared gradient; it should keep the maximum of "
        "the running average exp_avg_sq.",
    ),
    (
        "amsgrad_ignored",
        {"amsgrad_max": "ignored"},
        "amsgrad=True is ignored: the denominator must use the running maximum of exp_avg_sq.",
    ),
    (
        "maximize_ignored",
        {"ignore_maximize": True},
        "maximize=True is ignored: the gradient must be negated first.",
    ),
    (
        "float32_bias_correction",
        {"float32_bias": True},
        "the bias corrections are computed from the float32 step tensor, which loses "
        'digits in 1 - beta2**t; use the step as a Python number (state["step"].item()).',
    ),
)
_ADAM_ONLY: tuple[MistakeRow, ...] = (
    (
        "decoupled_decay",
        {"decay": "decoupled"},
        "weight decay is decoupled (the parameter is shrunk directly, as AdamW does); Adam "
        "adds weight_decay * p to the gradient before the moments (L2).",
    ),
    (
        "maximize_negates_decay",
        {"maximize_negates_decay": True},
        "with maximize=True the weight-decay term is negated too; torch negates only the "
        "gradient, then adds weight_decay * p.",
    ),
)
_ADAMW_ONLY: tuple[MistakeRow, ...] = (
    (
        "l2_instead_of_decoupled",
        {"decay": "l2"},
        "this is Adam + L2: weight_decay * p is added to the gradient. AdamW shrinks the "
        "parameter itself, p *= 1 - lr * weight_decay, and keeps the decay out of the moments.",
    ),
    (
        "decay_without_lr",
        {"decay": "decoupled_no_lr"},
        "the decay is not multiplied by the learning rate: AdamW shrinks p by "
        "1 - lr * weight_decay, not 1 - weight_decay.",
    ),
    (
        "decay_applied_twice",
        {"decay": "decoupled_and_l2"},
        "weight decay is applied twice: the parameter is shrunk and weight_decay * p is also "
        "added to the gradient (pass weight_decay=0 to the Adam part).",
    ),
    (
        "decay_after_update",
        {"decay": "decoupled_after"},
        "the decay is applied after the Adam update; torch shrinks the parameter first, then "
        "takes the Adam step.",
    ),
)

ADAM_MISTAKES = (
    *catalogue("adam", adam_rule, _SHARED, decay="l2"),
    *catalogue("adam", adam_rule, _ADAM_ONLY),
)
ADAMW_MISTAKES = (
    *catalogue("adamw", adam_rule, _ADAMW_ONLY),
    *catalogue("adamw", adam_rule, _SHARED, decay="decoupled"),
)
