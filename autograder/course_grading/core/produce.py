"""Student side: producers every week shares. Each runs the student's code on a check's inputs
and returns what happened as plain data; the trusted side judges it.

A producer is called as ``producer(*answers, **inputs)``, where ``answers`` are the objects
the test cell handed in and ``inputs`` come from the check's request. It never raises: an
error in the student's code is part of what it returns.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_grading.core.harness import attempt, describe_error, plain
from course_grading.core.runs import Case, make_model, optimizer_params, run_case, snapshot


def lineage(answer: Any) -> dict[str, Any]:
    """Whether ``answer`` is a class, and the qualified names of the classes it extends."""
    if not isinstance(answer, type):
        return {"is_class": False, "type": type(answer).__name__, "mro": []}
    mro = [f"{c.__module__}.{c.__qualname__}" for c in inspect.getmro(answer)]
    return {"is_class": True, "type": "type", "mro": mro}


def signature(answer: Any) -> dict[str, Any]:
    """The parameters of ``answer``'s signature (a class: its constructor) and their defaults."""
    try:
        params = inspect.signature(answer).parameters
    except (TypeError, ValueError) as exc:
        return {"unreadable": describe_error(exc)}
    found = {}
    for name, param in params.items():
        has_default = param.default is not inspect.Parameter.empty
        found[name] = {
            "kind": param.kind.name,
            "has_default": has_default,
            "default": plain(param.default) if has_default else None,
            "repr": repr(param.default)[:200],
        }
    return {"params": found}


def constructor_outcomes(
    cls: Any, calls: Sequence[dict[str, Any]], shape: Sequence[int] = (3,)
) -> list[dict[str, Any]]:
    """For each keyword set, whether ``cls([a parameter of shape], **kwargs)`` raised, and how."""
    outcomes = []
    for kwargs in calls:

        def construct(kwargs: dict[str, Any] = kwargs) -> Any:
            return cls([torch.zeros(*shape, requires_grad=True)], **kwargs)

        _, error = attempt(construct)
        outcomes.append({"error": error})
    return outcomes


def optimizer_runs(cls: Any, cases: Sequence[dict[str, Any]], batches: Sequence[Any]) -> dict:
    """The parameters after every step of every case; stops at the first case that raises."""
    runs = []
    for index, case in enumerate(cases):

        def run(case: dict[str, Any] = case) -> Any:
            return run_case(cls, Case.from_dict(case), batches)

        snapshots, error = attempt(run)
        if error is not None:
            return {"runs": runs, "error": {**error, "case": index}}
        runs.append(snapshots)
    return {"runs": runs}


def closure_step(cls: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One ``step(closure)`` from ``p = [1, -2]`` with the loss ``(p**2).sum()``."""
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    optimizer, error = attempt(lambda: cls([p], **kwargs))
    if error is not None:
        return {"construct_error": error}
    calls: list[int] = []

    def closure() -> torch.Tensor:
        calls.append(1)
        optimizer.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    returned, error = attempt(lambda: optimizer.step(closure))
    if error is not None:
        return {"step_error": error}
    loss = float(returned.detach()) if isinstance(returned, torch.Tensor) else None
    return {"calls": len(calls), "returned_loss": loss, "p": p.detach().clone()}


def calls(function: Callable[..., Any], calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``function(*args, **kwargs)`` for each call: its result as plain data, or its error.

    Tensors in the arguments are copied for every call, so that one call cannot change the
    inputs of the next.
    """
    outcomes = []
    for call in calls:
        args = [_fresh(a) for a in call.get("args", ())]
        kwargs = {k: _fresh(v) for k, v in call.get("kwargs", {}).items()}
        result, error = attempt(lambda args=args, kwargs=kwargs: plain(function(*args, **kwargs)))
        outcomes.append({"error": error} if error else {"value": result})
    return outcomes


def _fresh(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def optimizer_checkpoints(
    cls: Any,
    cases: Sequence[dict[str, Any]],
    batches: Sequence[Any],
    stop: int,
    resume_from: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """For each case: the optimizer's state after ``stop`` steps, and a resumed run.

    ``resume_from[i]`` holds a reference's parameters and ``state_dict()`` after ``stop``
    steps of case ``i``; the resumed run loads them into a new optimizer and goes on to the
    end, recording the parameters after every step. Stops at the first case that raises.
    """
    found: list[dict[str, Any]] = []
    for index, (case_data, checkpoint) in enumerate(zip(cases, resume_from, strict=True)):
        case = Case.from_dict(case_data)
        state, error = attempt(lambda case=case: _state_after(cls, case, batches, stop))
        if error is not None:
            return {"cases": found, "error": {**error, "case": index, "resumed": False}}
        run, error = attempt(lambda case=case, c=checkpoint: _resumed(cls, case, batches, stop, c))
        if error is not None:
            return {"cases": found, "error": {**error, "case": index, "resumed": True}}
        found.append({"state": state, "resumed": run})
    return {"cases": found}


def _state_after(cls: Any, case: Case, batches: Sequence[Any], stop: int) -> dict[str, Any]:
    model = make_model(case.seed)
    optimizer = cls(optimizer_params(model, case), **case.kwargs)
    for X, y in batches[:stop]:
        _one_step(optimizer, model, X, y)
    state = {}
    for name, p in model.named_parameters():
        group = next((g for g in optimizer.param_groups if any(q is p for q in g["params"])), {})
        state[name] = {
            "state": {str(k): plain(v) for k, v in optimizer.state[p].items()}
            if p in optimizer.state
            else {},
            "group": {str(k): plain(v) for k, v in group.items() if k != "params"},
        }
    return state


def _resumed(
    cls: Any, case: Case, batches: Sequence[Any], stop: int, checkpoint: dict[str, Any]
) -> list[dict[str, torch.Tensor]]:
    model = make_model(case.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(checkpoint["params"][name])
    run = [snapshot(model)]
    optimizer = cls(optimizer_params(model, case), **case.kwargs)
    optimizer.load_state_dict(copy.deepcopy(checkpoint["state_dict"]))
    for X, y in batches[stop : case.steps]:
        _one_step(optimizer, model, X, y)
        run.append(snapshot(model))
    return run


def _one_step(optimizer: Any, model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    optimizer.step()
