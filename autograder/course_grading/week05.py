"""Hidden checks for Week 5: schedules, gradient clipping, initialization, early stopping.

Exercise ids (grade ids in the notebook start with them): ``warmup_cosine_lr``, ``step_lr``,
``lambda_schedule``, ``clip_grad_norm``, ``init_std``, ``early_stopping``.

The references come from torch (``torch.optim.lr_scheduler``, ``torch.nn.utils.clip_grad_norm_``,
``torch.nn.init``), computed once per grading kernel in an isolated process
(``week05_reference``); early stopping has no torch counterpart and is checked against the
reference stopper of ``week05_mistakes``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from course_grading.compare import CheckFailed
from course_grading.interface_checks import expect_value_error
from course_grading.mistakes import Mistake
from course_grading.week05_mistakes import (
    CLIP_GRAD_NORM_MISTAKES,
    EARLY_STOPPING_MISTAKES,
    INIT_STD_MISTAKES,
    LAMBDA_SCHEDULE_MISTAKES,
    RESTORES_LAST,
    STEP_LR_MISTAKES,
    WARMUP_COSINE_LR_MISTAKES,
    WARMUP_COSINE_NO_HOLD,
    Stopper,
)
from course_grading.week05_reference import factor, isolated

# Schedules repeat the same float arithmetic up to reordering; every mistake is far outside.
LR_RTOL = 1e-9
# Clipping and init run in float64: honest answers agree to ~1e-15.
RTOL = 1e-12

# --- cases -------------------------------------------------------------------------------------

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


@functools.cache
def _clip_cases() -> dict[str, list[dict[str, Any]]]:
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
            _clip_case(
                "a gradient containing inf", [1.0] * 4, MLP_SHAPES, 1.0, poison=math.inf, seed=10
            ),
            _clip_case(
                "a gradient containing NaN", [1.0] * 4, MLP_SHAPES, 1.0, poison=math.nan, seed=11
            ),
            _clip_case(
                "a gradient containing inf, error_if_nonfinite=True",
                [1.0] * 4,
                MLP_SHAPES,
                1.0,
                poison=math.inf,
                error_if_nonfinite=True,
                seed=12,
            ),
            _clip_case(
                "a gradient containing NaN, error_if_nonfinite=True",
                [1.0] * 4,
                MLP_SHAPES,
                1.0,
                poison=math.nan,
                error_if_nonfinite=True,
                seed=13,
            ),
            _clip_case(
                "finite gradients, error_if_nonfinite=True",
                [1.0] * 4,
                MLP_SHAPES,
                1.0,
                error_if_nonfinite=True,
                seed=14,
            ),
        ],
    }


@functools.cache
def _reference() -> dict[str, list[Any]]:
    """Every torch reference of the week, computed once in an isolated process."""
    clip_cases = [c for cases in _clip_cases().values() for c in cases]
    answer = isolated(
        {
            "warmup_cosine": list(DECAY_CASES),
            "step_lr": list(STEP_LR_CASES),
            "lambda": [*LAMBDA_BASIC_CASES, *LAMBDA_GROUP_CASES],
            "clip": clip_cases,
            "init": [*XAVIER_CASES, *KAIMING_CASES],
        }
    )
    return {
        "warmup_cosine": dict(zip(map(_key, DECAY_CASES), answer["warmup_cosine"], strict=True)),
        "step_lr": dict(zip(map(_key, STEP_LR_CASES), answer["step_lr"], strict=True)),
        "lambda": dict(
            zip(
                map(_key, [*LAMBDA_BASIC_CASES, *LAMBDA_GROUP_CASES]),
                answer["lambda"],
                strict=True,
            )
        ),
        "clip": dict(zip([c["name"] for c in clip_cases], answer["clip"], strict=True)),
        "init": dict(zip(map(_key, [*XAVIER_CASES, *KAIMING_CASES]), answer["init"], strict=True)),
    }


def _key(case: dict[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in case.items()))


# --- guards ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _forbid(answer: str, targets: Sequence[tuple[Any, str, str]], advice: str) -> Iterator[None]:
    """Within the block, calling any of ``targets`` (owner, attribute, label) fails the check."""

    def blocker(label: str) -> Callable[..., Any]:
        def refuse(*_args: Any, **_kwargs: Any) -> None:
            __tracebackhide__ = True
            raise CheckFailed(f"`{answer}` called {label}: {advice}")

        return refuse

    saved = []
    for owner, name, label in targets:
        if hasattr(owner, name):
            saved.append((owner, name, owner.__dict__.get(name, getattr(owner, name))))
            setattr(owner, name, blocker(label))
    try:
        with warnings.catch_warnings():
            # nbgrader fails a cell that writes to stderr: keep the student's warnings out.
            warnings.simplefilter("ignore")
            yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def _no_schedulers(answer: str) -> contextlib.AbstractContextManager[None]:
    from torch.optim import lr_scheduler

    return _forbid(
        answer,
        [(lr_scheduler.LRScheduler, "__init__", "a torch.optim.lr_scheduler class")],
        "write the schedule yourself; the check compares it with torch's schedulers.",
    )


def _no_torch_clipping(answer: str) -> contextlib.AbstractContextManager[None]:
    from torch.nn.utils import clip_grad

    targets = [
        (clip_grad, name, f"torch.nn.utils.{name.lstrip('_')}")
        for name in (
            "_get_total_norm",
            "_clip_grads_with_norm_",
            "clip_grad_norm_",
            "clip_grad_norm",
        )
    ]
    targets += [
        (torch.nn.utils, name, f"torch.nn.utils.{name}")
        for name in ("get_total_norm", "clip_grads_with_norm_", "clip_grad_norm_", "clip_grad_norm")
    ]
    return _forbid(answer, targets, "compute the norm and scale the gradients yourself.")


def _no_torch_fans(answer: str) -> contextlib.AbstractContextManager[None]:
    init = torch.nn.init
    return _forbid(
        answer,
        [
            (init, "_calculate_fan_in_and_fan_out", "torch.nn.init's fan computation"),
            (init, "_calculate_correct_fan", "torch.nn.init's fan computation"),
        ],
        "compute fan_in and fan_out from weight.shape yourself (calculate_gain is fine).",
    )


def _call(answer: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    __tracebackhide__ = True
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(f"{answer} raised {type(exc).__name__}: {exc}") from None


def _as_float(answer: str, value: Any) -> float:
    __tracebackhide__ = True
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckFailed(
            f"{answer} should return a number, but returned {type(value).__name__}."
        ) from None


def _close(a: float, b: float, rtol: float, atol: float = 0.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def _name(mistakes: Sequence[Mistake], matches: Callable[..., bool], *context: Any) -> str:
    """The sentence of the first mistake for which ``matches(mistake, *context)`` holds."""
    for mistake in mistakes:
        try:
            if matches(mistake, *context):
                return f" This looks like a typical mistake: {mistake.sentence}"
        except Exception:  # a variant that cannot run this case cannot be the explanation
            continue
    return ""


# --- warmup_cosine_lr --------------------------------------------------------------------------


def _describe_schedule(c: dict[str, Any]) -> str:
    return (
        f"peak_lr={c['peak_lr']:g}, final_lr={c['final_lr']:g}, warmup_steps={c['warmup_steps']}, "
        f"total_steps={c['total_steps']}"
    )


def _schedule_values(fn: Callable[..., Any], case: dict[str, Any], n: int) -> list[float]:
    __tracebackhide__ = True
    out = []
    with _no_schedulers("warmup_cosine_lr"):
        for s in range(n):
            value = _call(f"warmup_cosine_lr({s}, {_describe_schedule(case)})", fn, s, **case)
            out.append(_as_float("warmup_cosine_lr", value))
    return out


def _check_warmup_cosine(fn: Callable[..., Any], cases: Sequence[dict], warmup_only: bool) -> None:
    __tracebackhide__ = True
    if not callable(fn):
        raise CheckFailed("warmup_cosine_lr must be a function.")
    reference = _reference()["warmup_cosine"]
    for case in cases:
        w, t = case["warmup_steps"], case["total_steps"]
        expected = list(reference[_key(case)])
        tail = 0 if warmup_only else max(3, t // 10)
        n = w + 1 if warmup_only else t + 1 + tail
        expected = expected[:n] + [case["final_lr"]] * (n - len(expected))
        got = _schedule_values(fn, case, n)
        atol = 1e-12 * max(case["peak_lr"], case["final_lr"])
        bad = [s for s in range(n) if not _close(got[s], expected[s], LR_RTOL, atol)]
        if not bad:
            continue
        s = bad[0]
        if s > t:
            source = "the schedule's definition"
            hint = f" This looks like a typical mistake: {WARMUP_COSINE_NO_HOLD}"
        else:
            source = (
                "torch's SequentialLR(LinearLR, CosineAnnealingLR)"
                if w
                else "torch's CosineAnnealingLR"
            )
            args = (case["peak_lr"], case["final_lr"], w, t)
            hint = _name(WARMUP_COSINE_LR_MISTAKES, _matches_schedule, args, got[: min(n, t)], atol)
        raise CheckFailed(
            f"[{_describe_schedule(case)}] at step {s} your warmup_cosine_lr gives "
            f"{got[s]:.10g}, but {source} gives {expected[s]:.10g}.{hint}"
        )


def _matches_schedule(m: Mistake, args: tuple, got: list[float], atol: float) -> bool:
    return all(_close(m.rule(k, *args), value, LR_RTOL, atol) for k, value in enumerate(got))


def check_warmup_cosine_lr_warmup(warmup_cosine_lr: Callable[..., Any]) -> None:
    """The warmup part, step 0 to warmup_steps, against LinearLR inside SequentialLR."""
    __tracebackhide__ = True
    _check_warmup_cosine(warmup_cosine_lr, WARMUP_CASES, warmup_only=True)


def check_warmup_cosine_lr_full(warmup_cosine_lr: Callable[..., Any]) -> None:
    """The whole schedule and after it, against SequentialLR / CosineAnnealingLR."""
    __tracebackhide__ = True
    _check_warmup_cosine(warmup_cosine_lr, DECAY_CASES, warmup_only=False)


# --- step_lr -----------------------------------------------------------------------------------


def check_step_lr(step_lr: Callable[..., Any]) -> None:
    """The step schedule against torch.optim.lr_scheduler.StepLR, with and without gamma."""
    __tracebackhide__ = True
    if not callable(step_lr):
        raise CheckFailed("step_lr must be a function.")
    _check_default(step_lr, "step_lr", "gamma", 0.1)
    reference = _reference()["step_lr"]
    for case in STEP_LR_CASES:
        expected = reference[_key(case)]
        lr, size, gamma = case["lr"], case["step_size"], case["gamma"]
        where = f"lr={lr:g}, step_size={size}, gamma={gamma:g}"
        got = []
        with _no_schedulers("step_lr"):
            for s in range(case["n_steps"]):
                value = _call("step_lr", step_lr, s, lr=lr, step_size=size, gamma=gamma)
                got.append(_as_float("step_lr", value))
        bad = [
            s
            for s, (a, b) in enumerate(zip(got, expected, strict=True))
            if not _close(a, b, LR_RTOL)
        ]
        if bad:
            s = bad[0]
            hint = _name(STEP_LR_MISTAKES, _matches_schedule, (lr, size, gamma), got, 0.0)
            raise CheckFailed(
                f"[{where}] at step {s} your step_lr gives {got[s]:.10g}, but torch's StepLR "
                f"gives {expected[s]:.10g}.{hint}"
            )


def _check_default(fn: Any, answer: str, name: str, value: Any) -> None:
    __tracebackhide__ = True
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if name not in params:
        raise CheckFailed(f"{answer} should take `{name}`.")
    if params[name].default != value:
        raise CheckFailed(
            f"{answer}'s default {name} should be {value!r}, as in torch; yours is "
            f"{params[name].default!r}."
        )


# --- lambda_schedule ---------------------------------------------------------------------------


def _check_lambda(LambdaSchedule: Any, cases: Sequence[dict[str, Any]]) -> None:
    __tracebackhide__ = True
    from torch.optim import lr_scheduler

    if not isinstance(LambdaSchedule, type):
        raise CheckFailed("LambdaSchedule must be a class.")
    if issubclass(LambdaSchedule, lr_scheduler.LRScheduler):
        raise CheckFailed(
            "LambdaSchedule extends a torch.optim.lr_scheduler class: write it yourself."
        )
    reference = _reference()["lambda"]
    for case in cases:
        expected = reference[_key(case)]
        fn = factor(case["factor"], case["args"])
        where = f"{case['factor']}, param groups with lr {case['group_lrs']}"
        groups = [
            {"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in case["group_lrs"]
        ]
        opt = torch.optim.SGD(groups, lr=case["group_lrs"][0])
        got = []
        with _no_schedulers("LambdaSchedule"):
            schedule = _call("LambdaSchedule(optimizer, lr_lambda)", LambdaSchedule, opt, fn)
            for _ in range(case["n_steps"]):
                got.append([float(g["lr"]) for g in opt.param_groups])
                opt.step()
                _call("LambdaSchedule.step()", schedule.step)
            last = _call("LambdaSchedule.get_last_lr()", schedule.get_last_lr)
        for s, (mine, ref) in enumerate(zip(got, expected, strict=True)):
            bad = [
                i
                for i, (a, b) in enumerate(zip(mine, ref, strict=True))
                if not _close(a, b, LR_RTOL)
            ]
            if not bad:
                continue
            i = bad[0]
            hint = _name(LAMBDA_SCHEDULE_MISTAKES, _matches_lambda, case, fn, got)
            raise CheckFailed(
                f"[{where}] before step {s}, param group {i} has lr {mine[i]:.10g} with your "
                f"LambdaSchedule but {ref[i]:.10g} with torch's LambdaLR.{hint}"
            )
        current = [float(g["lr"]) for g in opt.param_groups]
        try:
            last = [float(x) for x in last]
        except TypeError:
            raise CheckFailed("get_last_lr() should return a list with one lr per group.") from None
        if not _same_lrs([last], [current]):
            raise CheckFailed(
                f"[{where}] get_last_lr() returned {last}, but the groups' lrs are {current}."
            )


def _matches_lambda(m: Mistake, case: dict, fn: Callable[[int], float], got: list) -> bool:
    return _same_lrs(m.rule(case["group_lrs"], fn, case["n_steps"]), got)


def _same_lrs(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(_close(p, q, LR_RTOL) for p, q in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


def check_lambda_schedule_basic(LambdaSchedule: Any) -> None:
    """One param group, several lr_lambdas, against torch.optim.lr_scheduler.LambdaLR."""
    __tracebackhide__ = True
    _check_lambda(LambdaSchedule, LAMBDA_BASIC_CASES)


def check_lambda_schedule_groups(LambdaSchedule: Any) -> None:
    """Several param groups with their own initial lr, and get_last_lr()."""
    __tracebackhide__ = True
    _check_lambda(LambdaSchedule, LAMBDA_GROUP_CASES)


# --- clip_grad_norm ----------------------------------------------------------------------------


def _make_params(case: dict[str, Any]) -> tuple[list[torch.Tensor], Any]:
    params = []
    for shape, g in zip(case["shapes"], case["grads"], strict=True):
        p = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        p.grad = None if g is None else g.clone()
        params.append(p)
    if case["form"] == "tensor":
        return params, params[0]
    if case["form"] == "generator":
        return params, (p for p in params)
    return params, list(params)


def _run_clip(fn: Callable[..., Any], case: dict[str, Any], student: bool) -> dict[str, Any]:
    __tracebackhide__ = True
    params, arg = _make_params(case)
    before = [p.grad for p in params]
    result: dict[str, Any] = {"error": None, "exception": None, "total": None}
    kwargs = {"norm_type": case["norm_type"], "error_if_nonfinite": case["error_if_nonfinite"]}
    context = _no_torch_clipping("clip_grad_norm") if student else contextlib.nullcontext()
    with context:
        try:
            total = fn(arg, case["max_norm"], **kwargs)
            result["total"] = _as_float("clip_grad_norm", total) if student else float(total)
        except CheckFailed:
            raise
        except RuntimeError as exc:
            result["error"] = str(exc)
        except Exception as exc:
            result["exception"] = exc
    result["grads"] = [None if p.grad is None else p.grad.detach().clone() for p in params]
    result["same_objects"] = all(p.grad is b for p, b in zip(params, before, strict=True))
    return result


def _first_grad_difference(got: list, want: list) -> tuple[int, int, float, float] | None:
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a is None or b is None:
            if a is not b:
                return i, -1, math.nan, math.nan
            continue
        if a.shape != b.shape:
            return i, -1, math.nan, math.nan
        scale = float(b[torch.isfinite(b)].abs().max()) if torch.isfinite(b).any() else 1.0
        ok = torch.isclose(a, b, rtol=RTOL, atol=1e-15 * scale, equal_nan=True)
        if not bool(ok.all()):
            j = int(torch.nonzero(~ok.flatten())[0])
            return i, j, float(a.flatten()[j]), float(b.flatten()[j])
    return None


def _same_clip(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if (a["error"] is None) != (b["error"] is None) or a["exception"] or b["exception"]:
        return False
    if a["error"] is None and not _close(a["total"], b["total"], RTOL):
        return False
    return _first_grad_difference(a["grads"], b["grads"]) is None


def _matches_clip(m: Mistake, case: dict[str, Any], got: dict[str, Any]) -> bool:
    return _same_clip(_run_clip(m.rule, case, student=False), got)


def _check_clip(clip_grad_norm: Callable[..., Any], group: str) -> None:
    __tracebackhide__ = True
    if not callable(clip_grad_norm):
        raise CheckFailed("clip_grad_norm must be a function.")
    reference = _reference()["clip"]
    for case in _clip_cases()[group]:
        want = reference[case["name"]]
        got = _run_clip(clip_grad_norm, case, student=True)
        where = f"[{case['name']}; max_norm={case['max_norm']}]"
        problem = _clip_problem(got, want)
        if problem is None:
            if not got["same_objects"]:
                raise CheckFailed(
                    f"{where} the values are right, but the gradients are new tensors: scale "
                    "each p.grad in place (p.grad.mul_(coef)), as torch does."
                )
            continue
        hint = _name(CLIP_GRAD_NORM_MISTAKES, _matches_clip, case, got)
        raise CheckFailed(f"{where} {problem}{hint}")


def _clip_problem(got: dict[str, Any], want: dict[str, Any]) -> str | None:
    if got["exception"] is not None:
        exc = got["exception"]
        return f"clip_grad_norm raised {type(exc).__name__}: {exc}."
    if want["error"] is not None and got["error"] is None:
        return (
            "the total norm is not finite and error_if_nonfinite=True, so clip_grad_norm "
            "should raise RuntimeError (before touching the gradients)."
        )
    if want["error"] is None and got["error"] is not None:
        return f"clip_grad_norm raised RuntimeError: {got['error']}."
    if want["error"] is None and not _close(got["total"], want["total"], RTOL):
        return (
            f"clip_grad_norm returned {got['total']:.12g}, but torch.nn.utils.clip_grad_norm_ "
            f"returns the total norm {want['total']:.12g}."
        )
    diff = _first_grad_difference(got["grads"], want["grads"])
    if diff is None:
        return None
    i, j, a, b = diff
    if j < 0:
        return (
            f"parameter {i}'s .grad changed shape or presence: leave a None gradient None and "
            "scale the others in place."
        )
    when = "after the error" if want["error"] is not None else "after clipping"
    return (
        f"{when}, element {j} of parameter {i}'s gradient is {a:.12g} with yours but {b:.12g} "
        "with torch.nn.utils.clip_grad_norm_."
    )


def check_clip_grad_norm_basic(clip_grad_norm: Callable[..., Any]) -> None:
    """Clipping above and below the threshold, global norm, generators, in-place scaling."""
    __tracebackhide__ = True
    for name, value in (("norm_type", 2.0), ("error_if_nonfinite", False)):
        _check_default(clip_grad_norm, "clip_grad_norm", name, value)
    _check_clip(clip_grad_norm, "basic")


def check_clip_grad_norm_options(clip_grad_norm: Callable[..., Any]) -> None:
    """Other norm types (1, 3, inf), frozen parameters, a single tensor, no gradients at all."""
    __tracebackhide__ = True
    _check_clip(clip_grad_norm, "options")


def check_clip_grad_norm_nonfinite(clip_grad_norm: Callable[..., Any]) -> None:
    """inf and NaN gradients, with and without error_if_nonfinite."""
    __tracebackhide__ = True
    _check_clip(clip_grad_norm, "nonfinite")


# --- init_std ----------------------------------------------------------------------------------


def _check_init(fn: Callable[..., Any], answer: str, cases: Sequence[dict[str, Any]]) -> None:
    __tracebackhide__ = True
    if not callable(fn):
        raise CheckFailed(f"{answer} must be a function.")
    reference = _reference()["init"]
    for case in cases:
        want = reference[_key(case)]
        weight = torch.empty(case["shape"])
        args = ", ".join(
            [
                f"weight of shape {tuple(case['shape'])}",
                *(f"{k}={v!r}" for k, v in case["kwargs"].items()),
            ]
        )
        with _no_torch_fans(answer):
            got = _as_float(answer, _call(f"{answer}({args})", fn, weight, **case["kwargs"]))
        if _close(got, want, RTOL):
            continue
        hint = _name(INIT_STD_MISTAKES, _matches_init, case, got)
        name = "xavier_normal_" if case["fn"] == "xavier" else "kaiming_normal_"
        raise CheckFailed(
            f"{answer}({args}) gave {got:.10g}, but torch.nn.init.{name} draws with "
            f"std {want:.10g}.{hint}"
        )


def _matches_init(m: Mistake, case: dict[str, Any], got: float) -> bool:
    return _close(m.rule(case["fn"], case["shape"], case["kwargs"]), got, 1e-9)


def check_init_std_xavier(xavier_std: Callable[..., Any]) -> None:
    """Xavier (Glorot) std for linear and convolution weights and several gains."""
    __tracebackhide__ = True
    _check_default(xavier_std, "xavier_std", "gain", 1.0)
    _check_init(xavier_std, "xavier_std", XAVIER_CASES)


def check_init_std_kaiming(kaiming_std: Callable[..., Any]) -> None:
    """He (Kaiming) std: defaults, relu, tanh, leaky_relu's slope, fan_out, convolutions."""
    __tracebackhide__ = True
    for name, value in (("a", 0), ("mode", "fan_in"), ("nonlinearity", "leaky_relu")):
        _check_default(kaiming_std, "kaiming_std", name, value)
    _check_init(kaiming_std, "kaiming_std", KAIMING_CASES)


# --- early_stopping ----------------------------------------------------------------------------

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


def _dummy_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    return model.double()


def _mark(model: nn.Module, epoch: int) -> None:
    """Write ``epoch`` into every weight and buffer, in place, as training would."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.fill_(float(epoch))


def _epoch_in(model: nn.Module) -> float:
    return float(model[0].weight.detach().flatten()[0])


def _new_stopper(EarlyStopping: Any, patience: int, min_delta: float) -> Any:
    __tracebackhide__ = True
    if not isinstance(EarlyStopping, type):
        raise CheckFailed("EarlyStopping must be a class.")
    return _call(
        f"EarlyStopping(patience={patience}, min_delta={min_delta})",
        EarlyStopping,
        patience=patience,
        min_delta=min_delta,
    )


def _flags(stopper: Any, losses: Sequence[float], model: nn.Module, answer: str) -> list[bool]:
    """Call ``stopper.step`` epoch by epoch until it says stop; its answers."""
    __tracebackhide__ = True
    out = []
    for epoch, loss in enumerate(losses):
        _mark(model, epoch)
        flag = _call(f"{answer}.step(val_loss, model)", stopper.step, loss, model)
        if not isinstance(flag, (bool, int)) and not isinstance(flag, torch.Tensor):
            raise CheckFailed(f"{answer}.step() should return True or False, not {flag!r}.")
        out.append(bool(flag))
        if flag:
            break
    return out


def check_early_stopping_patience(EarlyStopping: Any) -> None:
    """When to stop: patience, min_delta, ties, resets; best_loss and best_epoch; validation."""
    __tracebackhide__ = True
    for desc, patience, min_delta, losses in STOPPING_CASES:
        mine = _new_stopper(EarlyStopping, patience, min_delta)
        ref = Stopper(patience, min_delta)
        got = _flags(mine, losses, _dummy_model(), "EarlyStopping")
        want = _flags(ref, losses, _dummy_model(), "reference")
        where = f"[{desc}: patience={patience}, min_delta={min_delta}, losses {losses}]"
        if got != want:
            hint = _name(
                EARLY_STOPPING_MISTAKES, _matches_stopper, patience, min_delta, losses, got
            )
            raise CheckFailed(f"{where} {_stop_story(got, want)}{hint}")
        for attr in ("best_loss", "best_epoch"):
            value = getattr(mine, attr, "missing")
            expected = getattr(ref, attr)
            if value == "missing":
                raise CheckFailed(f"EarlyStopping has no attribute `{attr}`.")
            if not _close(float(value), float(expected), 1e-12):
                raise CheckFailed(
                    f"{where} when it stopped, {attr} is {value!r}; expected {expected!r}."
                )
    _check_stopping_validation(EarlyStopping)


def _matches_stopper(
    m: Mistake, patience: int, min_delta: float, losses: Sequence[float], got: list[bool]
) -> bool:
    return _flags(m.rule(patience, min_delta), losses, _dummy_model(), "a variant") == got


def _stop_story(got: list[bool], want: list[bool]) -> str:
    stop_got = len(got) - 1 if got and got[-1] else None
    stop_want = len(want) - 1 if want and want[-1] else None
    if stop_got is None and len(got) - 1 == stop_want:
        return f"your EarlyStopping did not stop at epoch {stop_want}, where it should."
    if stop_got is None:
        return (
            f"your EarlyStopping never stopped in {len(got)} epochs; it should stop at epoch "
            f"{stop_want}."
        )
    if stop_want is None:
        return f"your EarlyStopping stopped at epoch {stop_got}; it should not stop at all."
    return f"your EarlyStopping stopped at epoch {stop_got}; it should stop at epoch {stop_want}."


def _check_stopping_validation(EarlyStopping: Any) -> None:
    __tracebackhide__ = True
    for kwargs, name in (({"patience": 0}, "patience"), ({"min_delta": -0.1}, "min_delta")):
        call = f"EarlyStopping({_kw(kwargs)})"
        expect_value_error(call, functools.partial(EarlyStopping, **kwargs), (name,))


def _kw(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def check_early_stopping_restore(EarlyStopping: Any) -> None:
    """restore() brings back the weights and buffers of the best epoch, not the last ones."""
    __tracebackhide__ = True
    for desc, patience, min_delta, losses in STOPPING_CASES[:3]:
        model = _dummy_model()
        mine = _new_stopper(EarlyStopping, patience, min_delta)
        ref = Stopper(patience, min_delta)
        got = _flags(mine, losses, model, "EarlyStopping")
        _flags(ref, losses, _dummy_model(), "reference")
        last = len(got) - 1
        for attempt in range(2):
            _call("EarlyStopping.restore(model)", mine.restore, model)
            where = f"[{desc}, patience={patience}]"
            restored = _epoch_in(model)
            if restored != ref.best_epoch:
                hint = ""
                if restored == last:
                    hint = f" This looks like a typical mistake: {RESTORES_LAST}"
                raise CheckFailed(
                    f"{where} after restore(model) the model holds the weights of epoch "
                    f"{restored:g}; the best epoch was {ref.best_epoch}.{hint}"
                )
            if float(model[1].running_mean[0]) != ref.best_epoch:
                raise CheckFailed(
                    f"{where} restore(model) brought back the weights but not the buffers "
                    "(BatchNorm's running statistics): keep the whole state_dict."
                )
            if attempt == 0:
                _mark(model, 99)  # training on; a second restore must still find the best


def _overfitting_run(
    mine: Any, ref: Stopper, max_epochs: int = 300
) -> tuple[list[bool], list[bool], list[float], nn.Module]:
    """Train a small MLP on 100 digits until the student's stopper stops it (or ``max_epochs``).

    Both stoppers see the same validation loss and model every epoch; the run also ends where
    their answers first differ. Returns both lists of answers, the losses and the model.
    """
    __tracebackhide__ = True
    from optlab.data import load_digits
    from optlab.models import mlp

    data = load_digits(dtype=torch.float64)
    X, y = data.X_train[:100], data.y_train[:100]
    model = mlp((64, 64, 10), seed=0, dtype=torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    got: list[bool] = []
    want: list[bool] = []
    losses: list[float] = []
    for _epoch in range(max_epochs):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
        with torch.no_grad():
            losses.append(float(loss_fn(model(data.X_val), data.y_val)))
        got.append(bool(_call("EarlyStopping.step(val_loss, model)", mine.step, losses[-1], model)))
        want.append(ref.step(losses[-1], model))
        if got[-1] or want[-1]:
            break
    return got, want, losses, model


RUN_SETTINGS = ((10, 1e-4), (25, 0.0))


def check_early_stopping_run(EarlyStopping: Any) -> None:
    """A real run that overfits: stop where the reference stops, restore its best weights."""
    __tracebackhide__ = True
    for patience, min_delta in RUN_SETTINGS:
        mine = _new_stopper(EarlyStopping, patience, min_delta)
        ref = Stopper(patience, min_delta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got, want, losses, model = _overfitting_run(mine, ref)
        where = (
            f"[a small MLP overfitting 100 digits, patience={patience}, min_delta={min_delta}; "
            f"the validation loss is lowest at epoch {ref.best_epoch}]"
        )
        if got != want:
            if not want[-1]:  # the student stopped first: where would the reference stop?
                rest = Stopper(patience, min_delta)
                want = _flags(rest, losses + [math.inf] * (patience + 1), _dummy_model(), "")
            hint = _name(EARLY_STOPPING_MISTAKES, _matches_stopper, patience, min_delta,
                         losses, got)  # fmt: skip
            raise CheckFailed(f"{where} {_stop_story(got, want)}{hint}")
        last = {k: v.clone() for k, v in model.state_dict().items()}
        _call("EarlyStopping.restore(model)", mine.restore, model)
        state = model.state_dict()
        if any(not torch.equal(state[k], ref.best_state[k]) for k in ref.best_state):
            is_last = all(torch.equal(state[k], last[k]) for k in last)
            hint = f" This looks like a typical mistake: {RESTORES_LAST}" if is_last else ""
            raise CheckFailed(
                f"{where} after restore(model) the weights are not those of the best epoch.{hint}"
            )
