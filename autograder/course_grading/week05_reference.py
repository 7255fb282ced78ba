"""Week 5's references, computed with torch in a fresh interpreter.

The Week 5 checks compare a submission with ``torch.optim.lr_scheduler``,
``torch.nn.utils.clip_grad_norm_`` and ``torch.nn.init``. A submission runs in the grading
kernel and could have replaced any of them there, so, as for the optimizers (``reference``),
the expected values come from a separate, isolated Python process that never sees student code.

A request is a dict with any of the keys ``"warmup_cosine"``, ``"step_lr"``, ``"lambda"``,
``"clip"`` and ``"init"``, each a list of cases; the answer has the same keys, one result per
case.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from course_grading.isolated import run_isolated

# --- lr factors the LambdaSchedule checks use, shared by both processes ------------------------


def _linear_warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / (warmup + 1))


def _exponential(step: int, gamma: float) -> float:
    return gamma**step


def _inverse_sqrt(step: int, warmup: int) -> float:
    return min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))


def _sawtooth(step: int, period: int) -> float:
    return 1.0 - 0.9 * (step % period) / period


FACTORS: dict[str, Callable[..., float]] = {
    "linear warmup": _linear_warmup,
    "exponential decay": _exponential,
    "inverse square root with warmup": _inverse_sqrt,
    "sawtooth": _sawtooth,
}


def factor(name: str, args: dict[str, Any]) -> Callable[[int], float]:
    """The lr factor ``name`` with its arguments, as a function of the step."""
    fn = FACTORS[name]
    return lambda step: fn(step, **args)


# --- the references --------------------------------------------------------------------------


def _dummy_optimizer(lrs: list[float]) -> torch.optim.Optimizer:
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _run_scheduler(opt: torch.optim.Optimizer, scheduler: Any, n_steps: int) -> list[list[float]]:
    """Every group's lr before each of ``n_steps`` optimizer steps."""
    out = []
    for _ in range(n_steps):
        out.append([float(g["lr"]) for g in opt.param_groups])
        opt.step()
        scheduler.step()
    return out


def warmup_cosine(case: dict[str, Any]) -> list[float]:
    """Linear warmup then cosine decay via SequentialLR(LinearLR, CosineAnnealingLR)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    peak, final = case["peak_lr"], case["final_lr"]
    warmup, total = case["warmup_steps"], case["total_steps"]
    opt = _dummy_optimizer([peak])
    cosine = CosineAnnealingLR(opt, T_max=total - warmup, eta_min=final)
    if warmup == 0:
        scheduler: Any = cosine
    else:
        linear = LinearLR(opt, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
        scheduler = SequentialLR(opt, [linear, cosine], milestones=[warmup])
    return [lrs[0] for lrs in _run_scheduler(opt, scheduler, total + 1)]


def step_lr(case: dict[str, Any]) -> list[float]:
    """StepLR's lr at every step."""
    from torch.optim.lr_scheduler import StepLR

    opt = _dummy_optimizer([case["lr"]])
    scheduler = StepLR(opt, step_size=case["step_size"], gamma=case["gamma"])
    return [lrs[0] for lrs in _run_scheduler(opt, scheduler, case["n_steps"])]


def lambda_lr(case: dict[str, Any]) -> list[list[float]]:
    """LambdaLR's lr of every group at every step."""
    from torch.optim.lr_scheduler import LambdaLR

    opt = _dummy_optimizer(case["group_lrs"])
    scheduler = LambdaLR(opt, factor(case["factor"], case["args"]))
    return _run_scheduler(opt, scheduler, case["n_steps"])


def clip(case: dict[str, Any]) -> dict[str, Any]:
    """clip_grad_norm_ on the case's gradients: the returned norm (or error) and the grads."""
    dtype = getattr(torch, case["dtype"])
    params = []
    for shape, g in zip(case["shapes"], case["grads"], strict=True):
        p = torch.zeros(shape, dtype=dtype, requires_grad=True)
        p.grad = None if g is None else g.clone()
        params.append(p)
    if case["form"] == "tensor":
        arg: Any = params[0]
    elif case["form"] == "generator":
        arg = (p for p in params)
    else:
        arg = list(params)
    result: dict[str, Any] = {"error": None, "total": None}
    try:
        total = torch.nn.utils.clip_grad_norm_(
            arg,
            case["max_norm"],
            norm_type=case["norm_type"],
            error_if_nonfinite=case["error_if_nonfinite"],
        )
        result["total"] = float(total)
    except RuntimeError as exc:
        result["error"] = str(exc)
    result["grads"] = [None if p.grad is None else p.grad.clone() for p in params]
    return result


def init_std(case: dict[str, Any]) -> float:
    """The std torch.nn.init's xavier_normal_ / kaiming_normal_ draw with, measured exactly.

    Both functions draw ``normal_(0, std)``; drawn with the same generator as a standard normal,
    the ratio of the two tensors is ``std`` itself.
    """
    shape = tuple(case["shape"])
    drawn = torch.empty(shape, dtype=torch.float64)
    unit = torch.empty(shape, dtype=torch.float64)
    init_fn = (
        torch.nn.init.xavier_normal_ if case["fn"] == "xavier" else torch.nn.init.kaiming_normal_
    )
    init_fn(drawn, **case["kwargs"], generator=torch.Generator().manual_seed(0))
    unit.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    return float((drawn / unit).median())


_COMPUTE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "warmup_cosine": warmup_cosine,
    "step_lr": step_lr,
    "lambda": lambda_lr,
    "clip": clip,
    "init": init_std,
}


def compute(request: dict[str, list[dict[str, Any]]]) -> dict[str, list[Any]]:
    """Every case of the request, computed with torch in this process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {key: [_COMPUTE[key](case) for case in cases] for key, cases in request.items()}


def isolated(request: dict[str, list[dict[str, Any]]]) -> dict[str, list[Any]]:
    """:func:`compute` in a fresh, isolated interpreter that student code cannot touch."""
    __tracebackhide__ = True
    return run_isolated("course_grading.week05_reference:compute", request)
