"""Trusted side: Week 5's cases, and torch's answers on them.

The references come from torch itself (``torch.optim.lr_scheduler``,
``torch.nn.utils.clip_grad_norm_``, ``torch.nn.init``), computed here, in the grading
process, where no student code runs; early stopping has no torch counterpart and is checked
against the reference stopper of ``week05.mistakes``.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_grading.week05.mistakes import Stopper
from course_grading.week05.produce import (
    clip_params,
    dummy_model,
    factor,
    mark,
    one_thread,
    overfitting_epoch,
    overfitting_setup,
)

# --- schedules -------------------------------------------------------------------------------

WARMUP_CASES = (
    {"peak_lr": 0.1, "final_lr": 0.0, "warmup_steps": 10, "total_steps": 100},
    {"peak_lr": 3e-4, "final_lr": 3e-5, "warmup_steps": 200, "total_steps": 1000},
    {"peak_lr": 1.0, "final_lr": 0.0, "warmup_steps": 1, "total_steps": 5},
    {"peak_lr": 0.5, "final_lr": 0.1, "warmup_steps": 37, "total_steps": 40},
)
DECAY_CASES = (
    *WARMUP_CASES,
    {"peak_lr": 1.0, "final_lr": 0.01, "warmup_steps": 0, "total_steps": 50},
    {"peak_lr": 0.1, "final_lr": 0.0, "warmup_steps": 5, "total_steps": 6},
    {"peak_lr": 2e-3, "final_lr": 0.0, "warmup_steps": 100, "total_steps": 2000},
    {"peak_lr": 0.3, "final_lr": 0.3, "warmup_steps": 10, "total_steps": 30},
    {"peak_lr": 0.1, "final_lr": 0.2, "warmup_steps": 5, "total_steps": 25},
)
STEP_LR_CASES = (
    {"lr": 0.1, "step_size": 30, "gamma": 0.1, "n_steps": 100},
    {"lr": 1.0, "step_size": 1, "gamma": 0.5, "n_steps": 20},
    {"lr": 0.05, "step_size": 7, "gamma": 0.9, "n_steps": 60},
)
LAMBDA_BASIC_CASES = (
    {"group_lrs": [0.1], "factor": "linear warmup", "args": {"warmup": 10}, "n_steps": 40},
    {"group_lrs": [0.1], "factor": "exponential decay", "args": {"gamma": 0.95}, "n_steps": 40},
    {
        "group_lrs": [0.5],
        "factor": "inverse square root with warmup",
        "args": {"warmup": 8},
        "n_steps": 40,
    },
)
LAMBDA_GROUP_CASES = (
    {"group_lrs": [0.1, 0.01], "factor": "sawtooth", "args": {"period": 7}, "n_steps": 30},
    {
        "group_lrs": [0.2, 0.05, 1.0],
        "factor": "linear warmup",
        "args": {"warmup": 5},
        "n_steps": 20,
    },
)

# --- init_std --------------------------------------------------------------------------------

XAVIER_CASES = (
    {"fn": "xavier", "shape": (100, 400), "kwargs": {}},
    {"fn": "xavier", "shape": (256, 256), "kwargs": {"gain": 5.0 / 3.0}},
    {"fn": "xavier", "shape": (10, 64), "kwargs": {"gain": math.sqrt(2.0)}},
    {"fn": "xavier", "shape": (16, 3, 5, 5), "kwargs": {}},
    {"fn": "xavier", "shape": (8, 4, 3), "kwargs": {"gain": 0.5}},
    {"fn": "xavier", "shape": (1, 1000), "kwargs": {}},
)
KAIMING_CASES = (
    {"fn": "kaiming", "shape": (100, 400), "kwargs": {}},
    {"fn": "kaiming", "shape": (100, 400), "kwargs": {"nonlinearity": "relu"}},
    {"fn": "kaiming", "shape": (100, 400), "kwargs": {"mode": "fan_out", "nonlinearity": "relu"}},
    {"fn": "kaiming", "shape": (16, 3, 5, 5), "kwargs": {"nonlinearity": "relu"}},
    {"fn": "kaiming", "shape": (16, 3, 5, 5), "kwargs": {"a": 0.2, "mode": "fan_out"}},
    {"fn": "kaiming", "shape": (256, 128), "kwargs": {"nonlinearity": "tanh"}},
    {"fn": "kaiming", "shape": (8, 4, 3), "kwargs": {"nonlinearity": "linear"}},
)

# --- clip_grad_norm --------------------------------------------------------------------------


def _clip_case(
    name: str,
    scales: Sequence[float | None],
    shapes: Sequence[tuple[int, ...]],
    max_norm: float,
    norm_type: Any = 2.0,
    form: str = "list",
    error_if_nonfinite: bool = False,
    poison: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    grads = []
    for scale, shape in zip(scales, shapes, strict=True):
        if scale is None:
            grads.append(None)
            continue
        grads.append(torch.randn(shape, generator=g, dtype=torch.float64) * scale)
    if poison is not None:
        first = next(x for x in grads if x is not None)
        first.view(-1)[1] = poison
    return {
        "name": name,
        "shapes": [tuple(s) for s in shapes],
        "grads": grads,
        "dtype": "float64",
        "max_norm": max_norm,
        "norm_type": norm_type,
        "form": form,
        "error_if_nonfinite": error_if_nonfinite,
    }


MLP_SHAPES = ((24, 64), (24,), (10, 24), (10,))


def _nonfinite_case(
    poison: float | None, seed: int, error_if_nonfinite: bool = False
) -> dict[str, Any]:
    """The model's gradients (scale 1, max_norm 1) with one element ``poison`` (inf, NaN, or
    None: all finite), named after what they hold and the option."""
    what = "finite gradients"
    if poison is not None:
        what = f"a gradient containing {'NaN' if math.isnan(poison) else 'inf'}"
    option = ", error_if_nonfinite=True" if error_if_nonfinite else ""
    return _clip_case(
        what + option,
        [1.0] * 4,
        MLP_SHAPES,
        1.0,
        poison=poison,
        error_if_nonfinite=error_if_nonfinite,
        seed=seed,
    )


@functools.cache
def clip_cases() -> dict[str, list[dict[str, Any]]]:
    """The clipping cases of each test cell (``basic``, ``options``, ``nonfinite``)."""
    return {
        "basic": [
            _clip_case(
                "a model's gradients whose total norm is above max_norm", [0.5] * 4, MLP_SHAPES, 1.0
            ),
            _clip_case(
                "the same gradients with a total norm below max_norm", [0.5] * 4, MLP_SHAPES, 100.0
            ),
            _clip_case(
                "one large gradient and two small ones",
                [10.0, 0.01, 0.01],
                ((5, 5), (5,), (3, 5)),
                2.0,
                seed=1,
            ),
            _clip_case(
                "parameters passed as a generator, like model.parameters()",
                [0.5] * 4,
                MLP_SHAPES,
                0.5,
                form="generator",
                seed=2,
            ),
            _clip_case("max_norm given as an int", [1.0] * 4, MLP_SHAPES, 3, seed=3),
        ],
        "options": [
            _clip_case("norm_type=1", [0.5] * 4, MLP_SHAPES, 5.0, norm_type=1.0, seed=4),
            _clip_case("norm_type=3", [0.5] * 4, MLP_SHAPES, 0.5, norm_type=3.0, seed=5),
            _clip_case("norm_type=inf", [0.5] * 4, MLP_SHAPES, 0.5, norm_type=math.inf, seed=6),
            _clip_case(
                "norm_type='inf' (a string)", [0.5] * 4, MLP_SHAPES, 0.5, norm_type="inf", seed=7
            ),
            _clip_case(
                "some parameters without a gradient (frozen)",
                [0.5, None, 0.5, None],
                MLP_SHAPES,
                1.0,
                seed=8,
            ),
            _clip_case(
                "a single tensor instead of a list", [3.0], ((7, 3),), 1.0, form="tensor", seed=9
            ),
            _clip_case("no parameter has a gradient", [None, None], ((3,), (2, 2)), 1.0),
        ],
        "nonfinite": [
            _nonfinite_case(math.inf, seed=10),
            _nonfinite_case(math.nan, seed=11),
            _nonfinite_case(math.inf, error_if_nonfinite=True, seed=12),
            _nonfinite_case(math.nan, error_if_nonfinite=True, seed=13),
            _nonfinite_case(None, error_if_nonfinite=True, seed=14),
        ],
    }


# --- early_stopping --------------------------------------------------------------------------

# (description, patience, min_delta, validation losses)
STOPPING_CASES = (
    ("a loss that falls, then rises", 3, 0.0, [1.0, 0.8, 0.7, 0.75, 0.8, 0.9, 1.0, 1.1]),
    (
        "two improvements separated by bad epochs",
        3,
        0.0,
        [1.0, 0.9, 0.95, 0.96, 0.85, 0.9, 0.91, 0.92, 0.93, 0.95],
    ),
    ("a plateau of equal losses", 2, 0.0, [1.0, 0.5, 0.5, 0.5, 0.5, 0.4]),
    ("losses slightly above the best", 3, 0.05, [1.0, 0.9, 0.92, 0.93, 0.94, 0.95]),
    (
        "improvements smaller than min_delta",
        3,
        0.05,
        [1.0, 0.9, 0.88, 0.86, 0.84, 0.83, 0.7, 0.69, 0.68, 0.67, 0.66],
    ),
    ("patience 1", 1, 0.0, [2.0, 1.5, 1.4, 1.45, 1.0]),
    (
        "a long patience",
        6,
        0.01,
        [1.0, 0.95, 0.9, 0.91, 0.9, 0.895, 0.89, 0.93, 0.92, 0.9, 0.9, 0.9],
    ),
)
# (patience, min_delta) of the real runs; a run never goes on longer than MAX_EPOCHS.
RUN_SETTINGS = ((10, 1e-4), (25, 0.0))
MAX_EPOCHS = 300


# --- torch's answers -------------------------------------------------------------------------


def _dummy_optimizer(lrs: Sequence[float]) -> torch.optim.Optimizer:
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _run_scheduler(opt: torch.optim.Optimizer, scheduler: Any, n_steps: int) -> list[list[float]]:
    """Every group's lr before each of ``n_steps`` optimizer steps."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cosine = CosineAnnealingLR(opt, T_max=total - warmup, eta_min=final)
        if warmup == 0:
            scheduler: Any = cosine
        else:
            linear = LinearLR(
                opt, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup
            )
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


def clip(case: dict[str, Any], clipper: Callable[..., Any] | None = None) -> dict[str, Any]:
    """``clipper`` (torch.nn.utils.clip_grad_norm_) on the case's gradients: the returned norm
    (or the text of the RuntimeError it raised) and the gradients after it."""
    clipper = clipper or torch.nn.utils.clip_grad_norm_
    params, arg = clip_params(case)
    result: dict[str, Any] = {"error": None, "total": None}
    try:
        total = clipper(
            arg,
            case["max_norm"],
            norm_type=case["norm_type"],
            error_if_nonfinite=case["error_if_nonfinite"],
        )
        result["total"] = float(total)
    except RuntimeError as exc:
        result["error"] = str(exc)
    result["grads"] = [None if p.grad is None else p.grad.detach().clone() for p in params]
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


def stopper_flags(stopper: Any, losses: Sequence[float], model: Any = None) -> list[bool]:
    """A trusted stopper's answers, epoch by epoch until it says stop."""
    model = dummy_model() if model is None else model
    out = []
    for epoch, loss in enumerate(losses):
        mark(model, epoch)
        flag = bool(stopper.step(loss, model))
        out.append(flag)
        if flag:
            break
    return out


def overfitting_reference(patience: int, min_delta: float, max_epochs: int) -> dict[str, Any]:
    """The check's overfitting run stopped by the reference stopper.

    Its validation losses and answers up to where it stops, and the weights it keeps (those
    of the best epoch).
    """
    stopper = Stopper(patience, min_delta)
    losses: list[float] = []
    flags: list[bool] = []
    with one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, X, y, model, optimizer = overfitting_setup()
        for _ in range(max_epochs):
            losses.append(overfitting_epoch(data, X, y, model, optimizer))
            flags.append(stopper.step(losses[-1], model))
            if flags[-1]:
                break
    return {"losses": losses, "flags": flags, "best_state": copy.deepcopy(stopper.best_state)}
