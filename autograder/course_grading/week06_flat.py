"""Hidden checks for Week 6's flat-buffer AdamW: numerically torch.optim.AdamW, and flat."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from course_grading.compare import CheckFailed, first_difference
from course_grading.guards import forbid_torch_optim, require_own_class
from course_grading.interface_checks import expect_value_error
from course_grading.mistakes import Mistake, identify
from course_grading.optimizer_checks import batches
from course_grading.runs import Case, Snapshots, run_case
from course_grading.week06_runs import FLAT_CASES, quiet, references

# --- flat_adamw ----------------------------------------------------------------------------

ADAMW_DEFAULTS = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 1e-2,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
}


def _adamw_rule(
    zero_grads: bool = False,
    coupled: bool = False,
    decay_without_lr: bool = False,
    no_bias_correction: bool = False,
    eps_inside_sqrt: bool = False,
) -> Callable:
    def rule(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        g = torch.zeros_like(g) if zero_grads else (-g if group["maximize"] else g)
        if not state:
            state["step"] = 0
            state["m"], state["v"], state["vmax"] = (torch.zeros_like(p) for _ in range(3))
        state["step"] += 1
        t = state["step"]
        if coupled:
            g = g + wd * p
        else:
            p.mul_(1 - (wd if decay_without_lr else lr * wd))
        m, v = state["m"], state["v"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        if group["amsgrad"]:
            torch.maximum(state["vmax"], v, out=state["vmax"])
            v = state["vmax"]
        bc1, bc2 = (1.0, 1.0) if no_bias_correction else (1 - b1**t, 1 - b2**t)
        denom = (v / bc2 + eps).sqrt() if eps_inside_sqrt else v.sqrt() / math.sqrt(bc2) + eps
        p.addcdiv_(m, denom, value=-lr / bc1)

    return rule


FLAT_ADAMW_MISTAKES = (
    Mistake(
        "flat_adamw/grads_disconnected",
        "the step never sees the gradients: zero_grad() set every p.grad to None, so backward() "
        "made new gradient tensors outside your flat buffer. Zero the flat gradient buffer in "
        "place in zero_grad(), so every p.grad stays a view of it.",
        _adamw_rule(zero_grads=True),
    ),
    Mistake(
        "flat_adamw/coupled_weight_decay",
        "weight decay is added to the gradient (Adam's L2 penalty); AdamW decays the weights "
        "directly: p *= 1 - lr * weight_decay.",
        _adamw_rule(coupled=True),
    ),
    Mistake(
        "flat_adamw/decay_without_lr",
        "the decoupled weight decay is not multiplied by the learning rate.",
        _adamw_rule(decay_without_lr=True),
    ),
    Mistake(
        "flat_adamw/no_bias_correction",
        "the moments are not bias-corrected (divide by 1 - beta1**t and 1 - beta2**t).",
        _adamw_rule(no_bias_correction=True),
    ),
    Mistake(
        "flat_adamw/eps_inside_sqrt",
        "eps is added inside the square root; torch adds it to sqrt(v_hat).",
        _adamw_rule(eps_inside_sqrt=True),
    ),
)


def _run_flat(FlatAdamW: Any, case: Case, data: list) -> Snapshots:
    __tracebackhide__ = True
    try:
        with forbid_torch_optim("FlatAdamW"), quiet():
            return run_case(FlatAdamW, case, data)
    except CheckFailed:
        raise
    except Exception as exc:
        hint = ""
        if case.frozen and isinstance(exc, (AttributeError, TypeError, RuntimeError)):
            hint = " Leave parameters that do not require a gradient out of the flat buffers."
        raise CheckFailed(
            f"[{case.name}] your FlatAdamW raised {type(exc).__name__}: {exc}.{hint}"
        ) from None


def _check_flat(FlatAdamW: Any, cases: list[Case]) -> None:
    """Like ``optimizer_checks.check_against_torch``, with this week's shared reference runs."""
    __tracebackhide__ = True
    require_own_class(FlatAdamW, "FlatAdamW")
    data = batches()
    for case in cases:
        expected = references()[("adamw", case.name)]
        actual = _run_flat(FlatAdamW, case, data)
        diff = first_difference(actual, expected)
        if diff is None:
            continue
        message = f"[{case.name}] {diff.describe('torch.optim.AdamW')}"
        if diff.step > 0 and all(torch.equal(actual[0][k], actual[-1][k]) for k in actual[0]):
            message += (
                " Your FlatAdamW never changed the model's parameters: point each p.data at "
                "its slice of the flat buffer, and update that buffer in place."
            )
        else:
            mistake = identify(actual, case, data, FLAT_ADAMW_MISTAKES, ADAMW_DEFAULTS)
            if mistake is not None:
                message += f" This looks like a typical mistake: {mistake.sentence}"
        raise CheckFailed(message)


def _check_adamw_signature(FlatAdamW: Any) -> None:
    __tracebackhide__ = True
    try:
        params = inspect.signature(FlatAdamW).parameters
    except (TypeError, ValueError):
        return
    for name in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
        if name not in params:
            raise CheckFailed(
                f"FlatAdamW's constructor should take `{name}`, as torch.optim.AdamW does."
            )
        if params[name].default != ADAMW_DEFAULTS[name]:
            raise CheckFailed(
                f"FlatAdamW's default {name} should be {ADAMW_DEFAULTS[name]!r}, as in "
                f"torch.optim.AdamW; yours is {params[name].default!r}."
            )


def check_flat_adamw_basic(FlatAdamW: Any) -> None:
    """AdamW over many steps against torch.optim.AdamW, default and larger learning rate."""
    __tracebackhide__ = True
    _check_adamw_signature(FlatAdamW)
    _check_flat(FlatAdamW, FLAT_CASES["basic"])


def check_flat_adamw_options(FlatAdamW: Any) -> None:
    """Weight decay, betas and eps, maximize, amsgrad; invalid values raise ValueError."""
    __tracebackhide__ = True
    _check_flat(FlatAdamW, FLAT_CASES["options"])
    for kwargs, names in (
        ({"lr": -0.01}, ("lr", "learning rate")),
        ({"eps": -1e-8}, ("eps", "epsilon")),
        ({"betas": (1.0, 0.999)}, ("beta",)),
        ({"betas": (0.9, -0.1)}, ("beta",)),
        ({"weight_decay": -0.1}, ("weight_decay", "weight decay")),
    ):
        expect_value_error(
            f"FlatAdamW(params, {kwargs})",
            partial(FlatAdamW, [nn.Parameter(torch.zeros(3))], **kwargs),
            names,
        )


def check_flat_adamw_groups_frozen(FlatAdamW: Any) -> None:
    """Param groups with their own settings, and a frozen first layer."""
    __tracebackhide__ = True
    _check_flat(FlatAdamW, FLAT_CASES["groups"])


class _OpCounter(TorchDispatchMode):
    """Counts the tensor operations (ATen calls) made inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(FlatAdamW: Any, n_layers: int) -> int:
    __tracebackhide__ = True
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(16, 16) for _ in range(n_layers)))
    opt = FlatAdamW(model.parameters(), lr=1e-3)
    X = torch.randn(8, 16)
    counts = []
    for _ in range(3):
        opt.zero_grad()
        model(X).square().mean().backward()
        with _OpCounter() as counter:
            opt.step()
        counts.append(counter.count)
    return counts[-1]


def _shared_storage(tensors: list[torch.Tensor]) -> bool:
    return len({t.untyped_storage().data_ptr() for t in tensors}) == 1


def check_flat_adamw_flat(FlatAdamW: Any) -> None:
    """Parameters and gradients live in one flat buffer; step() costs the same number of
    tensor operations whatever the number of parameter tensors."""
    __tracebackhide__ = True
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    before = [p.detach().clone() for p in model.parameters()]
    try:
        with quiet():
            opt = FlatAdamW(model.parameters(), lr=0.01)
            for _ in range(2):
                opt.zero_grad()
                model(torch.randn(4, 8)).square().mean().backward()
                opt.step()
    except Exception as exc:
        raise CheckFailed(f"FlatAdamW raised {type(exc).__name__}: {exc}") from None
    params = list(model.parameters())
    if not _shared_storage(params):
        raise CheckFailed(
            "the model's parameters should be views of one flat buffer (they live in "
            f"{len({p.untyped_storage().data_ptr() for p in params})} separate storages): "
            "copy them into a flat tensor and point each p.data at its slice."
        )
    if any(torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True)):
        raise CheckFailed(
            "a parameter did not change after two steps: the model's parameters must be the "
            "views your step updates."
        )
    grads = [p.grad for p in params]
    if any(g is None for g in grads) or not _shared_storage(grads):
        raise CheckFailed(
            "after zero_grad() and backward(), every p.grad should be a view into one flat "
            "gradient buffer: point each p.grad at its slice once, and make zero_grad() zero "
            "the buffer in place instead of setting the gradients to None."
        )
    try:
        with quiet():
            few, many = _ops_per_step(FlatAdamW, 2), _ops_per_step(FlatAdamW, 20)
    except Exception as exc:
        raise CheckFailed(f"FlatAdamW raised {type(exc).__name__}: {exc}") from None
    if many > few + 2:
        raise CheckFailed(
            f"step() ran {few} tensor operations for a model with 4 parameter tensors but "
            f"{many} for one with 40: work on the flat buffers with one set of operations per "
            "param group, not one per parameter."
        )
