"""Trusted side: Week 5's catalogue of typical mistakes, named in the feedback.

Each catalogue is a tuple of :class:`~course_grading.core.mistakes.Mistake`: an id, the
sentence the student reads, and a function that makes exactly that mistake. The judges in
``week05.checks`` run the functions on the failing case and name the first one that
reproduces the student's result. :class:`Stopper` is also the reference early stopping.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_grading.core.mistakes import Mistake

# --- warmup_cosine_lr: rule(step, peak, final, warmup, total) -> lr ---------------------------


def warmup_cosine(
    warmup: str = "right", cosine: str = "right", hold: bool = True
) -> Callable[[int, float, float, int, int], float]:
    """The schedule, with a deviation in its ``warmup`` or ``cosine`` part, or no final hold."""

    def rule(s: int, peak: float, final: float, w: int, t: int) -> float:
        if s < w:
            if warmup == "from_zero":
                return peak * s / w
            if warmup == "peaks_early":
                return peak * (s + 1) / w
            return peak * (s + 1) / (w + 1)
        if s >= t and hold:
            return final
        progress = (s - w) / (t - w)
        if cosine == "early":
            progress = min(1.0, (s - w) / (t - w - 1))
        elif cosine == "from_step_zero":
            progress = s / t
        low = 0.0 if cosine == "to_zero" else final
        if cosine == "rising":
            return low + (peak - low) * (1 - math.cos(math.pi * progress)) / 2
        return low + (peak - low) * (1 + math.cos(math.pi * progress)) / 2

    return rule


WARMUP_COSINE_LR_MISTAKES = (
    Mistake(
        "warmup_cosine_lr/warmup_from_zero",
        "the warmup is off by one step: it starts at lr 0, which wastes the first step. Step s "
        "of the warmup uses peak_lr * (s + 1) / (warmup_steps + 1).",
        warmup_cosine(warmup="from_zero"),
    ),
    Mistake(
        "warmup_cosine_lr/warmup_peaks_early",
        "the warmup is off by one step: it reaches peak_lr at step warmup_steps - 1 instead of "
        "at step warmup_steps (divide by warmup_steps + 1).",
        warmup_cosine(warmup="peaks_early"),
    ),
    Mistake(
        "warmup_cosine_lr/cosine_early",
        "the cosine reaches its final value a step early: it must reach final_lr exactly at "
        "step total_steps, so its progress is (step - warmup_steps) / (total_steps - "
        "warmup_steps).",
        warmup_cosine(cosine="early"),
    ),
    Mistake(
        "warmup_cosine_lr/cosine_from_step_zero",
        "the cosine's progress is counted from step 0; it starts at the end of the warmup: "
        "(step - warmup_steps) / (total_steps - warmup_steps).",
        warmup_cosine(cosine="from_step_zero"),
    ),
    Mistake(
        "warmup_cosine_lr/cosine_to_zero",
        "the cosine decays to 0 instead of to final_lr: "
        "lr = final_lr + (peak_lr - final_lr) * (1 + cos(pi * progress)) / 2.",
        warmup_cosine(cosine="to_zero"),
    ),
    Mistake(
        "warmup_cosine_lr/cosine_rising",
        "the cosine rises from final_lr to peak_lr instead of falling: use 1 + cos(...), not "
        "1 - cos(...).",
        warmup_cosine(cosine="rising"),
    ),
)

# Checked on its own: the schedule is right up to total_steps, wrong after.
WARMUP_COSINE_NO_HOLD = (
    "after total_steps the lr must stay at final_lr (the cosine would climb back up)."
)


# --- step_lr: rule(step, lr, step_size, gamma) -> lr ------------------------------------------

STEP_LR_MISTAKES = (
    Mistake(
        "step_lr/decays_early",
        "the lr decays one step early: the first decay happens at step step_size, not at "
        "step step_size - 1.",
        lambda s, lr, size, gamma: lr * gamma ** ((s + 1) // size),
    ),
    Mistake(
        "step_lr/smooth",
        "the decay is smooth; StepLR multiplies by gamma once every step_size steps: use "
        "integer division, step // step_size.",
        lambda s, lr, size, gamma: lr * gamma ** (s / size),
    ),
    Mistake(
        "step_lr/gamma_once",
        "the lr is multiplied by gamma only once; it is multiplied by gamma again after every "
        "step_size steps: lr * gamma ** (step // step_size).",
        lambda s, lr, size, gamma: lr * gamma if s >= size else lr,
    ),
    Mistake(
        "step_lr/decays_late",
        "the lr decays one step late: at step step_size it should already be lr * gamma.",
        lambda s, lr, size, gamma: lr * gamma ** (max(s - 1, 0) // size),
    ),
    Mistake(
        "step_lr/every_step",
        "the lr is multiplied by gamma at every step; StepLR keeps it for step_size steps "
        "between decays: lr * gamma ** (step // step_size).",
        lambda s, lr, size, gamma: lr * gamma**s,
    ),
)


# --- lambda_schedule: rule(base_lrs, factor, n_steps) -> lrs per step per group ----------------


def lambda_schedule(
    start: bool = True, compound: bool = False, one_base: bool = False, offset: int = 0
) -> Callable[[Sequence[float], Callable[[int], float], int], list[list[float]]]:
    """LambdaLR's lr sequence, with one deviation."""

    def rule(
        base_lrs: Sequence[float], factor: Callable[[int], float], n: int
    ) -> list[list[float]]:
        bases = [base_lrs[0]] * len(base_lrs) if one_base else list(base_lrs)
        lrs = [b * factor(0) for b in bases] if start else list(bases)
        out = [list(lrs)]
        for k in range(1, n):
            f = factor(max(0, k + offset))
            lrs = [lr * f for lr in lrs] if compound else [b * f for b in bases]
            out.append(list(lrs))
        return out

    return rule


LAMBDA_SCHEDULE_MISTAKES = (
    Mistake(
        "lambda_schedule/not_applied_at_start",
        "the schedule is not applied when it is created: the first optimizer step must already "
        "use initial_lr * lr_lambda(0).",
        lambda_schedule(start=False),
    ),
    Mistake(
        "lambda_schedule/compounds",
        "each step multiplies the current lr instead of the initial one: "
        "lr = initial_lr * lr_lambda(step).",
        lambda_schedule(compound=True),
    ),
    Mistake(
        "lambda_schedule/one_base_lr",
        "every param group must keep its own initial lr; one lr is used for all groups.",
        lambda_schedule(one_base=True),
    ),
    Mistake(
        "lambda_schedule/counter_behind",
        "the step counter is one step behind: after n calls to step() the lr must be "
        "initial_lr * lr_lambda(n).",
        lambda_schedule(offset=-1),
    ),
    Mistake(
        "lambda_schedule/counter_ahead",
        "the step counter is one step ahead: after n calls to step() the lr must be "
        "initial_lr * lr_lambda(n).",
        lambda_schedule(offset=1),
    ),
)


# --- clip_grad_norm: rule(params, max_norm, norm_type, error_if_nonfinite) -> total -----------


def clip(
    per_tensor: bool = False,
    clamp: bool = True,
    eps: float = 1e-6,
    return_after: bool = False,
    consume_twice: bool = False,
    skip_if_below: bool = False,
    raise_errors: bool = True,
    inf_as_p: bool = False,
) -> Callable[..., Any]:
    """torch's clip_grad_norm_, with one deviation."""

    def norm(t: torch.Tensor, p: float) -> torch.Tensor:
        if inf_as_p and math.isinf(p):
            return t.abs().pow(p).sum().pow(1.0 / p)
        return torch.linalg.vector_norm(t, p)

    @torch.no_grad()
    def rule(
        parameters: Any, max_norm: float, norm_type: Any = 2.0, error_if_nonfinite: bool = False
    ) -> Any:
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        elif not consume_twice:
            parameters = list(parameters)
        p = float(norm_type)
        grads = [q.grad for q in parameters if q.grad is not None]
        if not grads:
            return torch.tensor(0.0)
        if per_tensor:
            norms = [norm(g, p) for g in grads]
            for g, n in zip(grads, norms, strict=True):
                if raise_errors and error_if_nonfinite and not torch.isfinite(n):
                    raise RuntimeError("a gradient's norm is non-finite")
                g.mul_(torch.clamp(max_norm / (n + eps), max=1.0))
            return norm(torch.stack(norms), p)
        total = norm(torch.stack([norm(g, p) for g in grads]), p)
        if raise_errors and error_if_nonfinite and not torch.isfinite(total):
            raise RuntimeError("the total norm is non-finite")
        coef = max_norm / (total + eps)
        if clamp:
            coef = torch.clamp(coef, max=1.0)
        if not (skip_if_below and not bool(total > max_norm)):
            for q in parameters:
                if q.grad is not None:
                    q.grad.mul_(coef)
        if return_after:
            return norm(torch.stack([norm(g, p) for g in grads]), p)
        return total

    return rule


CLIP_GRAD_NORM_MISTAKES = (
    Mistake(
        "clip_grad_norm/per_tensor",
        "each gradient is clipped on its own instead of by the global norm: compute one total "
        "norm over all gradients, then scale every gradient by the same coefficient.",
        clip(per_tensor=True),
    ),
    Mistake(
        "clip_grad_norm/scales_up",
        "your clipping scales the gradients up when their norm is below max_norm: clamp the "
        "coefficient max_norm / (total_norm + 1e-6) to at most 1.",
        clip(clamp=False),
    ),
    Mistake(
        "clip_grad_norm/no_eps",
        "the 1e-6 is missing: torch scales by max_norm / (total_norm + 1e-6).",
        clip(eps=0.0),
    ),
    Mistake(
        "clip_grad_norm/returns_norm_after",
        "the returned norm is the one after clipping; return the total norm of the gradients "
        "as they were before.",
        clip(return_after=True),
    ),
    Mistake(
        "clip_grad_norm/generator_consumed",
        "`parameters` is iterated twice: a generator such as model.parameters() is empty the "
        "second time, so nothing gets scaled. Turn it into a list first.",
        clip(consume_twice=True),
    ),
    Mistake(
        "clip_grad_norm/nonfinite_skipped",
        "with a non-finite total norm torch still multiplies every gradient by the coefficient "
        "(0 for an inf norm, NaN for a NaN norm), so the broken step shows; yours leaves them.",
        clip(skip_if_below=True),
    ),
    Mistake(
        "clip_grad_norm/no_error",
        "error_if_nonfinite=True must raise RuntimeError when the total norm is inf or NaN.",
        clip(raise_errors=False),
    ),
    Mistake(
        "clip_grad_norm/inf_as_p",
        "norm_type=inf is computed as a p-norm with p = inf; the inf-norm is the largest "
        "absolute value (its total: the largest of the per-tensor norms).",
        clip(inf_as_p=True),
    ),
)


# --- init_std: rule(kind, shape, kwargs) -> std ------------------------------------------------


def _fans(shape: Sequence[int], swapped: bool, receptive: bool) -> tuple[int, int]:
    field = math.prod(shape[2:]) if receptive else 1
    fan_in, fan_out = shape[1] * field, shape[0] * field
    return (fan_out, fan_in) if swapped else (fan_in, fan_out)


INIT_STD_SLIPS = frozenset(
    {
        "fans_swapped",
        "no_receptive_field",
        "xavier_no_two",
        "kaiming_no_gain",
        "kaiming_gain_without_a",
        "mode_ignored",
        "variance",
        "kaiming_uses_both_fans",
    }
)


def init_std(slip: str) -> Callable[[str, Sequence[int], dict[str, Any]], float]:
    """The std of xavier_normal_ / kaiming_normal_ with one slip, named as in its mistake's
    id (one of :data:`INIT_STD_SLIPS`)."""
    if slip not in INIT_STD_SLIPS:
        raise ValueError(f"no init_std slip {slip!r}")

    def rule(kind: str, shape: Sequence[int], kwargs: dict[str, Any]) -> float:
        fan_in, fan_out = _fans(
            shape, swapped=slip == "fans_swapped", receptive=slip != "no_receptive_field"
        )
        if kind == "xavier":
            g = kwargs.get("gain", 1.0)
            var = g**2 * (1.0 if slip == "xavier_no_two" else 2.0) / (fan_in + fan_out)
        else:
            a = kwargs.get("a", 0)
            nonlinearity = kwargs.get("nonlinearity", "leaky_relu")
            mode = "fan_in" if slip == "mode_ignored" else kwargs.get("mode", "fan_in")
            fan = fan_in if mode == "fan_in" else fan_out
            if slip == "kaiming_uses_both_fans":
                fan = fan_in + fan_out
            if slip == "kaiming_no_gain":
                g = 1.0
            elif slip == "kaiming_gain_without_a":
                g = torch.nn.init.calculate_gain(nonlinearity)
            else:
                g = torch.nn.init.calculate_gain(nonlinearity, a)
            var = g**2 / fan
        return var if slip == "variance" else math.sqrt(var)

    return rule


INIT_STD_MISTAKES = (
    Mistake(
        "init_std/fans_swapped",
        "fan_in and fan_out are swapped: a weight has shape (out_features, in_features, ...), "
        "so fan_in comes from weight.shape[1].",
        init_std("fans_swapped"),
    ),
    Mistake(
        "init_std/no_receptive_field",
        "for a convolution the fans include the kernel: fan_in = shape[1] * (product of "
        "shape[2:]), fan_out = shape[0] * (the same product).",
        init_std("no_receptive_field"),
    ),
    Mistake(
        "init_std/xavier_no_two",
        "Xavier's variance is gain**2 * 2 / (fan_in + fan_out): the 2 is missing.",
        init_std("xavier_no_two"),
    ),
    Mistake(
        "init_std/kaiming_no_gain",
        "the gain of the nonlinearity is missing: std = gain / sqrt(fan), with "
        "gain = torch.nn.init.calculate_gain(nonlinearity, a).",
        init_std("kaiming_no_gain"),
    ),
    Mistake(
        "init_std/kaiming_gain_without_a",
        "the gain ignores `a`: pass it on, calculate_gain(nonlinearity, a) (without it "
        "leaky_relu assumes a slope of 0.01).",
        init_std("kaiming_gain_without_a"),
    ),
    Mistake(
        "init_std/mode_ignored",
        "mode='fan_out' must divide by fan_out (it preserves the size of the gradients in the "
        "backward pass instead of the activations in the forward pass).",
        init_std("mode_ignored"),
    ),
    Mistake(
        "init_std/variance",
        "that is the variance; return its square root, the standard deviation.",
        init_std("variance"),
    ),
    Mistake(
        "init_std/kaiming_uses_both_fans",
        "He (Kaiming) initialization divides by one fan (fan_in by default), not by "
        "fan_in + fan_out.",
        init_std("kaiming_uses_both_fans"),
    ),
)


# --- early_stopping ------------------------------------------------------------------------------


STOPPER_SLIPS = frozenset(
    {
        "patience_late",
        "patience_early",
        "no_reset",
        "min_delta_ignored",
        "min_delta_sign",
        "ties_improve",
    }
)


class Stopper:
    """The reference early stopping; with a ``slip`` (one of :data:`STOPPER_SLIPS`, named as
    in its mistake's id), a typical wrong one for the mistake catalogue."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0, slip: str | None = None) -> None:
        if slip is not None and slip not in STOPPER_SLIPS:
            raise ValueError(f"no early-stopping slip {slip!r}")
        self.patience = patience
        self.min_delta = min_delta
        self.slip = slip
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.epoch = -1

    def step(self, val_loss: float, model: torch.nn.Module) -> bool:
        """Record one epoch; True when training should stop."""
        self.epoch += 1
        min_delta = 0.0 if self.slip == "min_delta_ignored" else self.min_delta
        sign = -1.0 if self.slip == "min_delta_sign" else 1.0
        threshold = self.best_loss - sign * min_delta
        better = val_loss <= threshold if self.slip == "ties_improve" else val_loss < threshold
        if better:
            self.best_loss = float(val_loss)
            self.best_epoch = self.epoch
            self.best_state = copy.deepcopy(model.state_dict())
            if self.slip != "no_reset":
                self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        shift = {"patience_late": 1, "patience_early": -1}.get(self.slip or "", 0)
        return self.bad_epochs >= self.patience + shift

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best weights back into ``model``."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def stopper(slip: str) -> Callable[[int, float], Stopper]:
    """A factory of stoppers with one slip."""
    return lambda patience, min_delta: Stopper(patience, min_delta, slip)


EARLY_STOPPING_MISTAKES = (
    Mistake(
        "early_stopping/patience_late",
        "patience is off by one: training stops one epoch late. Stop as soon as the number of "
        "epochs without improvement reaches patience.",
        stopper("patience_late"),
    ),
    Mistake(
        "early_stopping/patience_early",
        "patience is off by one: training stops one epoch early. Stop when the number of "
        "epochs without improvement reaches patience, not patience - 1.",
        stopper("patience_early"),
    ),
    Mistake(
        "early_stopping/no_reset",
        "the count of epochs without improvement is not reset to 0 when the loss improves.",
        stopper("no_reset"),
    ),
    Mistake(
        "early_stopping/min_delta_ignored",
        "min_delta is ignored: a loss only counts as an improvement if it is below "
        "best_loss - min_delta.",
        stopper("min_delta_ignored"),
    ),
    Mistake(
        "early_stopping/min_delta_sign",
        "min_delta has the wrong sign: a loss counts as an improvement only if it is below "
        "best_loss - min_delta, not best_loss + min_delta.",
        stopper("min_delta_sign"),
    ),
    Mistake(
        "early_stopping/ties_improve",
        "an equal loss counts as an improvement; it must be strictly lower than "
        "best_loss - min_delta.",
        stopper("ties_improve"),
    ),
)

RESTORES_LAST = (
    "your EarlyStopping restores the last weights instead of the best: model.state_dict() "
    "holds references to the live tensors, which training keeps changing, so keep a deep copy "
    "(copy.deepcopy(model.state_dict()))."
)
