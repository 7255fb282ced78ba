"""Trusted side: typical wrong versions of Adam and AdamW, as update rules the checks can run.

:func:`adam_rule` builds torch's update with one deliberate deviation (Week 6 builds on it too);
the catalogues below turn each deviation into a :class:`~course_grading.core.mistakes.Mistake`
with the sentence the student reads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_grading.core.mistakes import Mistake


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


def _shared(prefix: str, decay: str) -> tuple[Mistake, ...]:
    """The mistakes Adam and AdamW share (their update is the same apart from the decay)."""
    return (
        Mistake(
            f"{prefix}/no_bias_correction",
            "the moments are not bias-corrected: divide m by (1 - beta1**t) and v by "
            "(1 - beta2**t), or the first steps have the wrong size.",
            adam_rule(decay=decay, bias="none"),
        ),
        Mistake(
            f"{prefix}/first_moment_only_corrected",
            "only the first moment is bias-corrected; v needs its own correction 1 - beta2**t.",
            adam_rule(decay=decay, bias="m_only"),
        ),
        Mistake(
            f"{prefix}/eps_inside_sqrt",
            "eps is added inside the square root; torch adds it outside: sqrt(v_hat) + eps.",
            adam_rule(decay=decay, eps_inside=True),
        ),
        Mistake(
            f"{prefix}/step_shared",
            "one step counter is shared by all parameters and advances once per parameter; "
            'each parameter counts its own steps in its state (state["step"]).',
            adam_rule(decay=decay, shared_step=True),
        ),
        Mistake(
            f"{prefix}/step_off_by_one",
            "the step counter is one ahead: the first step must use t = 1 in the bias "
            "corrections (start at 0 and add 1 before using it).",
            adam_rule(decay=decay, step_offset=1),
        ),
        Mistake(
            f"{prefix}/betas_swapped",
            "beta1 and beta2 are swapped: betas[0] averages the gradient, betas[1] its square.",
            adam_rule(decay=decay, betas_swapped=True),
        ),
        Mistake(
            f"{prefix}/amsgrad_max_of_corrected",
            "amsgrad keeps the maximum of the bias-corrected v_hat; torch keeps the maximum of "
            "the raw exp_avg_sq and bias-corrects that maximum.",
            adam_rule(decay=decay, amsgrad_max="corrected"),
        ),
        Mistake(
            f"{prefix}/amsgrad_max_of_grad_sq",
            "amsgrad keeps the maximum of the squared gradient; it should keep the maximum of "
            "the running average exp_avg_sq.",
            adam_rule(decay=decay, amsgrad_max="grad_sq"),
        ),
        Mistake(
            f"{prefix}/amsgrad_ignored",
            "amsgrad=True is ignored: the denominator must use the running maximum of exp_avg_sq.",
            adam_rule(decay=decay, amsgrad_max="ignored"),
        ),
        Mistake(
            f"{prefix}/maximize_ignored",
            "maximize=True is ignored: the gradient must be negated first.",
            adam_rule(decay=decay, ignore_maximize=True),
        ),
        Mistake(
            f"{prefix}/float32_bias_correction",
            "the bias corrections are computed from the float32 step tensor, which loses "
            'digits in 1 - beta2**t; use the step as a Python number (state["step"].item()).',
            adam_rule(decay=decay, float32_bias=True),
        ),
    )


ADAM_MISTAKES = (
    *_shared("adam", "l2"),
    Mistake(
        "adam/decoupled_decay",
        "weight decay is decoupled (the parameter is shrunk directly, as AdamW does); Adam "
        "adds weight_decay * p to the gradient before the moments (L2).",
        adam_rule(decay="decoupled"),
    ),
    Mistake(
        "adam/maximize_negates_decay",
        "with maximize=True the weight-decay term is negated too; torch negates only the "
        "gradient, then adds weight_decay * p.",
        adam_rule(maximize_negates_decay=True),
    ),
)

ADAMW_MISTAKES = (
    Mistake(
        "adamw/l2_instead_of_decoupled",
        "this is Adam + L2: weight_decay * p is added to the gradient. AdamW shrinks the "
        "parameter itself, p *= 1 - lr * weight_decay, and keeps the decay out of the moments.",
        adam_rule(decay="l2"),
    ),
    Mistake(
        "adamw/decay_without_lr",
        "the decay is not multiplied by the learning rate: AdamW shrinks p by "
        "1 - lr * weight_decay, not 1 - weight_decay.",
        adam_rule(decay="decoupled_no_lr"),
    ),
    Mistake(
        "adamw/decay_applied_twice",
        "weight decay is applied twice: the parameter is shrunk and weight_decay * p is also "
        "added to the gradient (pass weight_decay=0 to the Adam part).",
        adam_rule(decay="decoupled_and_l2"),
    ),
    Mistake(
        "adamw/decay_after_update",
        "the decay is applied after the Adam update; torch shrinks the parameter first, then "
        "takes the Adam step.",
        adam_rule(decay="decoupled_after"),
    ),
    *_shared("adamw", "decoupled"),
)
