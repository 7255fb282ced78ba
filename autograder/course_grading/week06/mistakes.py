"""Trusted side: Week 6's catalogue of typical mistakes, named in the feedback.

``loss_scaler`` and ``master_weights``: wrong classes, run like a submission so that a failing
check can name the mistake a run matches. ``flat_adamw``: wrong AdamW updates, as rules built
from Week 4's :func:`~course_grading.week04.mistakes.adam_rule`. ``ulp`` and
``adamw_traffic``: the wrong values typical mistakes compute, with what they mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from course_grading.core.mistakes import Mistake, Rule
from course_grading.week04.mistakes import adam_rule
from course_grading.week06.cases import dtype_name


@dataclass(frozen=True)
class WrongClass:
    """A typical wrong version of an answer: its id, a sentence for the student, its factory."""

    id: str
    sentence: str
    factory: Any


def _wrong(base: type, **flags: bool) -> type:
    """``base`` (``_Scaler``, ``_Master``) with the typical mistakes ``flags`` switched on."""
    if unknown := set(flags) - set(vars(base)):
        raise ValueError(f"{base.__name__} has no mistake flags {sorted(unknown)}")
    return type(f"Wrong{base.__name__.lstrip('_')}", (base,), dict(flags))


# --- loss scaler ---------------------------------------------------------------------------


class _Scaler:
    """A loss scaler whose flags each switch on one typical mistake (all off: correct)."""

    unscale_twice = False
    grow_after_skip = False
    keep_tracker_on_overflow = False
    keep_tracker_on_growth = False
    inf_only = False
    step_on_overflow = False
    check_loss_only = False

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        self.scale_value = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.enabled = enabled
        self.tracker = 0
        self.found_inf = False
        self.unscaled = False
        self.loss_finite = True

    def get_scale(self) -> float:
        return self.scale_value if self.enabled else 1.0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return loss
        self.loss_finite = bool(torch.isfinite(loss).all())
        return loss * self.scale_value

    @torch.no_grad()
    def unscale_(self, optimizer: Any) -> None:
        if not self.enabled:
            return
        found = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.grad.div_(self.scale_value)
                bad = torch.isinf(p.grad) if self.inf_only else ~torch.isfinite(p.grad)
                found = found or bool(bad.any())
        self.found_inf = (not self.loss_finite) if self.check_loss_only else found
        self.unscaled = True

    def step(self, optimizer: Any) -> Any:
        if not self.enabled:
            return optimizer.step()
        if self.unscale_twice or not self.unscaled:
            self.unscale_(optimizer)
        if self.found_inf and not self.step_on_overflow:
            return None
        return optimizer.step()

    def update(self) -> None:
        if not self.enabled:
            return
        if self.found_inf:
            self.scale_value *= self.backoff_factor
            if self.grow_after_skip:
                self._count_success()
            elif not self.keep_tracker_on_overflow:
                self.tracker = 0
        else:
            self._count_success()
        self.found_inf = False
        self.unscaled = False

    def _count_success(self) -> None:
        self.tracker += 1
        if self.tracker >= self.growth_interval:
            self.scale_value *= self.growth_factor
            if not self.keep_tracker_on_growth:
                self.tracker = 0


LOSS_SCALER_MISTAKES = (
    WrongClass(
        "loss_scaler/unscales_twice",
        "the gradients are unscaled twice when unscale_() was already called before step(); "
        "remember that they were unscaled and let step() unscale only if they were not.",
        _wrong(_Scaler, unscale_twice=True),
    ),
    WrongClass(
        "loss_scaler/nan_not_skipped",
        "only inf is detected: a NaN gradient goes through (torch.isinf(nan) is False); "
        "test with torch.isfinite, which catches both.",
        _wrong(_Scaler, inf_only=True),
    ),
    WrongClass(
        "loss_scaler/grows_after_skip",
        "a skipped step still counts towards growth, so the scale grows after a skipped step; "
        "only steps without inf/NaN count, and an overflow restarts the count at 0.",
        _wrong(_Scaler, grow_after_skip=True),
    ),
    WrongClass(
        "loss_scaler/tracker_not_reset_on_overflow",
        "the growth counter is not reset to 0 when an overflow backs the scale off, so the "
        "scale grows again too early.",
        _wrong(_Scaler, keep_tracker_on_overflow=True),
    ),
    WrongClass(
        "loss_scaler/tracker_not_reset_on_growth",
        "the growth counter is not reset to 0 after the scale grows, so once it reaches "
        "growth_interval the scale grows at every step.",
        _wrong(_Scaler, keep_tracker_on_growth=True),
    ),
    WrongClass(
        "loss_scaler/steps_on_overflow",
        "the scale backs off, but the optimizer still steps with inf/NaN gradients; skip "
        "optimizer.step() when any gradient is not finite.",
        _wrong(_Scaler, step_on_overflow=True),
    ),
    WrongClass(
        "loss_scaler/checks_loss",
        "the scaler checks the loss for inf/NaN instead of the gradients: the loss is finite "
        "when the fp16 backward pass overflows.",
        _wrong(_Scaler, check_loss_only=True),
    ),
)


# --- master weights ------------------------------------------------------------------------


class _Master:
    """A master-weight wrapper whose flags each switch on one typical mistake."""

    no_write_back = False
    step_low_precision = False
    refresh_masters = False
    zero_master_grads_only = False

    def __init__(self, params: Any, optimizer_cls: type, **kwargs: Any) -> None:
        self.params = list(params)
        self.master_params = [p.detach().float().clone() for p in self.params]
        target = self.params if self.step_low_precision else self.master_params
        self.optimizer = optimizer_cls(target, **kwargs)

    def zero_grad(self) -> None:
        if self.zero_master_grads_only:
            for m in self.master_params:
                m.grad = None
            return
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if self.step_low_precision:
            self.optimizer.step()
            for p, m in zip(self.params, self.master_params, strict=True):
                m.copy_(p)
            return
        for p, m in zip(self.params, self.master_params, strict=True):
            if self.refresh_masters:
                m.copy_(p)
            m.grad = None if p.grad is None else p.grad.float()
        self.optimizer.step()
        if not self.no_write_back:
            for p, m in zip(self.params, self.master_params, strict=True):
                p.copy_(m)


MASTER_WEIGHTS_MISTAKES = (
    WrongClass(
        "master_weights/no_write_back",
        "the fp32 master copies are updated but never written back to the low-precision "
        "model: copy them into the model's parameters (p.copy_(master)) after the step.",
        _wrong(_Master, no_write_back=True),
    ),
    WrongClass(
        "master_weights/steps_low_precision",
        "the optimizer updates the low-precision parameters and the master copies only follow "
        "them: build the inner optimizer on the fp32 master copies and step those.",
        _wrong(_Master, step_low_precision=True),
    ),
    WrongClass(
        "master_weights/masters_refreshed",
        "the master copies are re-made from the low-precision weights at every step, which "
        "throws away the fp32 digits they carry: make them once, in __init__.",
        _wrong(_Master, refresh_masters=True),
    ),
    WrongClass(
        "master_weights/model_grads_accumulate",
        "zero_grad() clears the master copies' gradients but not the model's, where backward() "
        "writes: the model's gradients add up from step to step.",
        _wrong(_Master, zero_master_grads_only=True),
    ),
)


# --- flat AdamW ----------------------------------------------------------------------------


def _without_gradients(rule: Rule) -> Rule:
    """``rule`` applied as if every gradient were zero."""

    def zero_grad_rule(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        rule(p, torch.zeros_like(g), state, group)

    return zero_grad_rule


FLAT_ADAMW_MISTAKES = (
    Mistake(
        "flat_adamw/grads_disconnected",
        "the step never sees the gradients: zero_grad() set every p.grad to None, so backward() "
        "made new gradient tensors outside your flat buffer. Zero the flat gradient buffer in "
        "place in zero_grad(), so every p.grad stays a view of it.",
        _without_gradients(adam_rule(decay="decoupled")),
    ),
    Mistake(
        "flat_adamw/coupled_weight_decay",
        "weight decay is added to the gradient (Adam's L2 penalty); AdamW decays the weights "
        "directly: p *= 1 - lr * weight_decay.",
        adam_rule(decay="l2"),
    ),
    Mistake(
        "flat_adamw/decay_without_lr",
        "the decoupled weight decay is not multiplied by the learning rate.",
        adam_rule(decay="decoupled_no_lr"),
    ),
    Mistake(
        "flat_adamw/no_bias_correction",
        "the moments are not bias-corrected (divide by 1 - beta1**t and 1 - beta2**t).",
        adam_rule(decay="decoupled", bias="none"),
    ),
    Mistake(
        "flat_adamw/eps_inside_sqrt",
        "eps is added inside the square root; torch adds it to sqrt(v_hat).",
        adam_rule(decay="decoupled", eps_inside=True),
    ),
)


# --- ulp -----------------------------------------------------------------------------------

_RELATIVE = (
    "that is eps * |x|, a relative size: the spacing is a power of two, "
    "the same for every number between two powers of two."
)


def ulp_mistakes(x: float, dtype: torch.dtype, expected: float) -> list[tuple[float, str]]:
    """(the value a wrong ulp returns for ``x`` in ``dtype``, what it means), in the order
    the feedback tries them."""
    eps = torch.finfo(dtype).eps
    rounded = abs(float(torch.tensor(x, dtype=dtype)))
    _, e = math.frexp(abs(x))
    return [
        (
            2 * expected,
            "it is twice too large: frexp's mantissa lies in [0.5, 1), so "
            "|x| = m * 2**e has the spacing 2**(e - 1) * eps.",
        ),
        (eps * abs(x), _RELATIVE),
        (eps * rounded, _RELATIVE),
        (eps, "that is eps itself, the spacing at 1.0 only: scale it by x's power of two."),
        (
            2.0 ** (e - 1) * eps,
            "that is the spacing at x before rounding it to "
            f"{dtype_name(dtype)}: round x to the format first (it may round up to the next "
            "power of two).",
        ),
    ]


# --- adamw_traffic -------------------------------------------------------------------------


def traffic_mistakes(n: int, pb: int, gb: int, sb: int) -> dict[int, str]:
    """The byte counts typical mistakes give for ``adamw_step_bytes(n, pb, gb, sb)``."""
    return {
        n * (pb + gb + 2 * sb): "you counted the reads only; p, m and v are written back.",
        n * (2 * pb + 2 * gb + 4 * sb): "the gradient is only read by the step.",
        n * (2 * pb + gb + 2 * sb): "m and v are each read and written.",
        n * (2 * pb + 4 * sb): "the step also reads the gradient.",
        28 * n: "use the byte sizes you are given, not fp32's.",
    }
