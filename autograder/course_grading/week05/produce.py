"""Student side: Week 5's producers (the shared ones are in ``core.produce``).

Each runs the student's answer on the inputs a check sends and returns what happened as plain
data: the learning rates of a schedule, the gradients after clipping, the std of an
initialization, the answers of an early stopper. The trusted side compares them with torch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from course_grading.core.harness import attempt, describe_error, plain, student_code

# --- lr factors of the LambdaSchedule checks (the trusted side's reference uses them too) ----


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


# --- schedules -------------------------------------------------------------------------------


def schedule_values(
    fn: Any, runs: Sequence[dict[str, Any]], forbid: Sequence[str] = ()
) -> dict[str, Any]:
    """For each run, ``float(fn(step, **kwargs))`` for every step below ``steps``.

    Stops at the first call that raises (``error``) or returns no number (``not_number``:
    the type's name), recording the step.
    """
    found: dict[str, Any] = {"callable": callable(fn), "runs": []}
    if not found["callable"]:
        return found
    for run in runs:
        values: list[float] = []
        outcome: dict[str, Any] = {"values": values}
        found["runs"].append(outcome)
        for step in range(run["steps"]):
            value, error = attempt(lambda s=step, k=run["kwargs"]: fn(s, **k), forbid)
            if error is None:
                number, error, not_number = _number(value)
                if not_number is not None:
                    outcome.update(step=step, not_number=not_number)
                    return found
            if error is not None:
                outcome.update(step=step, error=error)
                return found
            values.append(number)
    return found


def _number(value: Any) -> tuple[float, dict[str, Any] | None, str | None]:
    """``float(value)``; or the error it raised; or, for TypeError/ValueError, the type name."""
    try:
        with student_code():
            return float(value), None, None
    except (TypeError, ValueError):
        return math.nan, None, type(value).__name__
    except (Exception, SystemExit) as exc:
        return math.nan, describe_error(exc), None


def lambda_runs(
    LambdaSchedule: Any, cases: Sequence[dict[str, Any]], forbid: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Drive ``LambdaSchedule`` on torch.optim.SGD param groups, case by case.

    For each case: every group's lr before each optimizer step, then what ``get_last_lr()``
    returned and the groups' lrs at the end. Stops at the first case whose code raised
    (``error``, with ``call`` naming what raised).
    """
    runs = []
    for case in cases:
        run = _lambda_run(LambdaSchedule, case, forbid)
        runs.append(run)
        if "error" in run:
            break
    return runs


def _lambda_run(cls: Any, case: dict[str, Any], forbid: Sequence[str]) -> dict[str, Any]:
    groups = [
        {"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in case["group_lrs"]
    ]
    optimizer = torch.optim.SGD(groups, lr=case["group_lrs"][0])
    fn = factor(case["factor"], case["args"])
    lrs: list[list[float]] = []
    run: dict[str, Any] = {"lrs": lrs}

    def group_lrs() -> list[float]:
        return [float(g["lr"]) for g in optimizer.param_groups]

    schedule, error = attempt(lambda: cls(optimizer, fn), forbid)
    if error is not None:
        return {**run, "error": error, "call": "construct"}
    for _ in range(case["n_steps"]):
        current, error = attempt(group_lrs)
        if error is not None:
            return {**run, "error": error, "call": "read"}
        lrs.append(current)
        _, error = attempt(optimizer.step)
        if error is not None:
            return {**run, "error": error, "call": "optimizer"}
        _, error = attempt(lambda: schedule.step(), forbid)
        if error is not None:
            return {**run, "error": error, "call": "step"}
    last, error = attempt(lambda: schedule.get_last_lr(), forbid)
    if error is not None:
        return {**run, "error": error, "call": "get_last_lr"}
    run["last"], error = attempt(lambda: [float(x) for x in last])
    if error is not None:
        run["last_unreadable"] = error
    run["current"], error = attempt(group_lrs)
    if error is not None:
        return {**run, "error": error, "call": "read"}
    return run


# --- clip_grad_norm --------------------------------------------------------------------------


def clip_runs(fn: Any, cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """For each case, ``fn(parameters, max_norm, norm_type=..., error_if_nonfinite=...)``.

    Records the returned total as a float (``not_number``: the type's name, if it is none),
    a RuntimeError (``error``) or another exception (``exception``), the gradients afterwards
    and whether they are still the same tensor objects.
    """
    found: dict[str, Any] = {"callable": callable(fn), "cases": []}
    if found["callable"]:
        found["cases"] = [_clip_run(fn, case) for case in cases]
    return found


def clip_params(case: dict[str, Any]) -> tuple[list[torch.Tensor], Any]:
    """The case's parameters with their gradients, and the argument a clipper gets (a list,
    a generator or a single tensor, as the case's ``form`` says)."""
    params = []
    for shape, grad in zip(case["shapes"], case["grads"], strict=True):
        p = torch.zeros(tuple(shape), dtype=getattr(torch, case["dtype"]), requires_grad=True)
        p.grad = None if grad is None else grad.clone()
        params.append(p)
    if case["form"] == "tensor":
        return params, params[0]
    if case["form"] == "generator":
        return params, (p for p in params)
    return params, list(params)


def _clip_run(fn: Any, case: dict[str, Any]) -> dict[str, Any]:
    params, arg = clip_params(case)
    before = [p.grad for p in params]
    result: dict[str, Any] = {"total": None, "not_number": None, "error": None, "exception": None}
    try:
        with student_code():
            total = fn(
                arg,
                case["max_norm"],
                norm_type=case["norm_type"],
                error_if_nonfinite=case["error_if_nonfinite"],
            )
            try:
                result["total"] = float(total)
            except (TypeError, ValueError):
                result["not_number"] = type(total).__name__
    except RuntimeError as exc:  # torch's own error for a non-finite norm is one
        result["error"] = describe_error(exc)
    except (Exception, SystemExit) as exc:
        result["exception"] = describe_error(exc)
    result["grads"] = [None if p.grad is None else p.grad.detach().clone() for p in params]
    result["same_objects"] = all(p.grad is b for p, b in zip(params, before, strict=True))
    return result


# --- init_std --------------------------------------------------------------------------------


def init_stds(
    fn: Any, cases: Sequence[dict[str, Any]], forbid: Sequence[str] = ()
) -> dict[str, Any]:
    """For each case, ``float(fn(torch.empty(shape), **kwargs))``; stops at the first problem."""
    found: dict[str, Any] = {"callable": callable(fn), "cases": []}
    if not found["callable"]:
        return found
    for case in cases:
        weight = torch.empty(tuple(case["shape"]))
        value, error = attempt(lambda w=weight, k=case["kwargs"]: fn(w, **k), forbid)
        if error is not None:
            found["cases"].append({"error": error})
            break
        number, error, not_number = _number(value)
        if error is not None or not_number is not None:
            found["cases"].append({"error": error, "not_number": not_number})
            break
        found["cases"].append({"value": number})
    return found


# --- early_stopping --------------------------------------------------------------------------


def dummy_model() -> nn.Module:
    """A Linear layer and a BatchNorm: weights and buffers for a stopper to keep."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    return model.double()


def mark(model: nn.Module, epoch: int) -> None:
    """Write ``epoch`` into every weight and buffer, in place, as training would."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.fill_(float(epoch))


def _new_stopper(cls: Any, patience: int, min_delta: float) -> tuple[Any, dict[str, Any] | None]:
    if not isinstance(cls, type):
        return None, {"not_class": type(cls).__name__}
    stopper, error = attempt(lambda: cls(patience=patience, min_delta=min_delta))
    if error is not None:
        return None, {"construct_error": error}
    return stopper, None


def _flags(
    stopper: Any, losses: Sequence[float], model: nn.Module
) -> tuple[list[bool], dict[str, Any] | None]:
    """``stopper.step(loss, model)`` epoch by epoch until it says stop; its answers."""
    flags: list[bool] = []
    for epoch, loss in enumerate(losses):
        mark(model, epoch)
        flag, error = attempt(lambda loss=loss: stopper.step(loss, model))
        if error is not None:
            return flags, {"step_error": error}
        if not isinstance(flag, (bool, int, torch.Tensor)):
            text, _ = attempt(lambda flag=flag: repr(flag))
            return flags, {"bad_flag": str(text)[:1500]}
        answer, error = attempt(lambda flag=flag: bool(flag))
        if error is not None:
            return flags, {"step_error": error}
        flags.append(bool(answer))
        if answer:
            break
    return flags, None


def _attribute(stopper: Any, name: str) -> dict[str, Any]:
    missing = object()
    value, error = attempt(lambda: getattr(stopper, name, missing))
    if error is not None or value is missing:
        return {"missing": True}
    text, _ = attempt(lambda: repr(value))
    number, _ = attempt(lambda: float(value))
    return {"missing": False, "repr": str(text)[:1500], "number": number}


def _stopper_runs(
    EarlyStopping: Any,
    cases: Sequence[dict[str, Any]],
    run: Callable[[Any, dict[str, Any]], tuple[dict[str, Any], bool]],
) -> list[dict[str, Any]]:
    """For each case, a new stopper with its ``patience`` and ``min_delta``, then
    ``run(stopper, case)``: what happened, and whether the student's code raised.

    Stops at the first case whose stopper could not be made or raised.
    """
    found = []
    for case in cases:
        stopper, problem = _new_stopper(EarlyStopping, case["patience"], case["min_delta"])
        if problem is not None:
            found.append(problem)
            break
        outcome, raised = run(stopper, case)
        found.append(outcome)
        if raised:
            break
    return found


def stopping_runs(EarlyStopping: Any, cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each case, the stopper's answers on its losses, then its best_loss and best_epoch.

    Stops at the first case whose stopper could not be made or raised.
    """
    return _stopper_runs(EarlyStopping, cases, _stopping_run)


def _stopping_run(stopper: Any, case: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    flags, problem = _flags(stopper, case["losses"], dummy_model())
    if problem is not None:
        return {"flags": flags, **problem}, True
    best = {name: _attribute(stopper, name) for name in ("best_loss", "best_epoch")}
    return {"flags": flags, "best": best}, False


def restore_runs(EarlyStopping: Any, cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each case: the answers, then twice ``restore(model)`` (training on in between),
    each time the epoch written in the model's first weight and in its BatchNorm buffer."""
    return _stopper_runs(EarlyStopping, cases, _restore_run)


def _restore_run(stopper: Any, case: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    model = dummy_model()
    flags, problem = _flags(stopper, case["losses"], model)
    if problem is not None:
        return {"flags": flags, **problem}, True
    restores: list[dict[str, Any]] = []
    for again in (False, True):
        _, error = attempt(lambda: stopper.restore(model))
        if error is None:
            seen, error = attempt(lambda: _restored_marks(model))
        if error is not None:
            restores.append({"error": error})
            return {"flags": flags, "restores": restores}, True
        restores.append(seen)
        if not again:
            mark(model, 99)  # training on; a second restore must still find the best
    return {"flags": flags, "restores": restores}, False


def _restored_marks(model: nn.Module) -> dict[str, float]:
    return {
        "weight": float(model[0].weight.detach().flatten()[0]),
        "buffer": float(model[1].running_mean[0]),
    }


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread, as in the sandbox: the same arithmetic, bit for bit, on both sides."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def overfitting_setup() -> tuple[Any, Any, Any, nn.Module, torch.optim.Optimizer]:
    """The run of the check: 100 digits, a float64 MLP from seed 0, Adam with lr 0.01."""
    from optlab.data import load_digits
    from optlab.models import mlp

    data = load_digits(dtype=torch.float64)
    model = mlp((64, 64, 10), seed=0, dtype=torch.float64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return data, data.X_train[:100], data.y_train[:100], model, optimizer


def overfitting_epoch(
    data: Any, X: torch.Tensor, y: torch.Tensor, model: nn.Module, optimizer: Any
) -> float:
    """One epoch (one full-batch step); the validation loss after it."""
    loss_fn = nn.CrossEntropyLoss()
    optimizer.zero_grad()
    loss_fn(model(X), y).backward()
    optimizer.step()
    with torch.no_grad():
        return float(loss_fn(model(data.X_val), data.y_val))


def overfitting_runs(
    EarlyStopping: Any, settings: Sequence[dict[str, Any]], max_epochs: int
) -> list[dict[str, Any]]:
    """Train the overfitting MLP until the student's stopper stops it (or ``max_epochs``).

    For each setting: the stopper's answers and the validation losses, epoch by epoch; when
    it stopped, the weights then (``last``) and after ``restore(model)`` (``restored``).
    Stops at the first setting whose stopper could not be made or raised.
    """

    def run(stopper: Any, _setting: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        outcome = _overfitting_run(stopper, max_epochs)
        return outcome, "step_error" in outcome or "restore_error" in outcome

    return _stopper_runs(EarlyStopping, settings, run)


def _overfitting_run(stopper: Any, max_epochs: int) -> dict[str, Any]:
    flags: list[bool] = []
    losses: list[float] = []
    run: dict[str, Any] = {"flags": flags, "losses": losses}
    with one_thread():
        data, X, y, model, optimizer = overfitting_setup()
        for epoch in range(max_epochs):
            losses.append(overfitting_epoch(data, X, y, model, optimizer))
            answer, error = attempt(lambda: bool(stopper.step(losses[-1], model)))
            if error is not None:
                return {**run, "step_error": {**error, "epoch": epoch}}
            flags.append(bool(answer))
            if answer:
                break
    if not (flags and flags[-1]):
        return run
    run["last"] = plain(dict(model.state_dict()))
    _, error = attempt(lambda: stopper.restore(model))
    if error is not None:
        return {**run, "restore_error": error}
    run["restored"] = plain(dict(model.state_dict()))
    return run
