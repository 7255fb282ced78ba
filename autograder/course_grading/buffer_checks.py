"""Checks for optimizers that keep per-parameter buffers (momentum, running averages).

From Week 2 on, student optimizers extend ``torch.optim.Optimizer`` and keep their buffers in
``self.state[p]`` under the names ``torch.optim`` uses, so ``state_dict()`` and
``load_state_dict()`` carry them. The checks here compare those buffers with the reference's
after some steps and resume a run from a checkpoint the reference wrote. Like
``reference.reference_runs``, the reference's state is computed in a fresh interpreter that
never sees student code.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from course_grading.compare import CheckFailed, first_difference
from course_grading.guards import forbid_torch_optim, require_own_class
from course_grading.isolated import run_isolated
from course_grading.optimizer_checks import batches
from course_grading.reference import case_from_dict, load_class
from course_grading.runs import Case, Snapshots, make_model, optimizer_params

# hint(key, student_value, reference_value, group) -> a sentence naming the mistake, or None.
BufferHint = Callable[[str, torch.Tensor, torch.Tensor, dict], str | None]


@dataclass
class Checkpoint:
    """A reference run with its optimizer's state part-way.

    ``snapshots`` are the parameters after every step of the whole case; ``state`` maps each
    parameter's name to its state after ``stop`` steps; ``state_dict`` is the reference's own
    ``optimizer.state_dict()`` at that point.
    """

    snapshots: Snapshots
    state: dict[str, dict[str, Any]]
    state_dict: dict[str, Any]
    stop: int


def reference_checkpoints(
    reference: str, cases: Sequence[Case], data: Sequence[Any], stop: int
) -> list[Checkpoint]:
    """Run ``reference`` (a dotted class name) on every case in one fresh process."""
    __tracebackhide__ = True
    request = {
        "reference": reference,
        "cases": [dataclasses.asdict(c) for c in cases],
        "batches": list(data),
        "stop": stop,
    }
    answer = run_isolated("course_grading.buffer_checks:compute_checkpoints", request)
    return [Checkpoint(**c) for c in answer]


def compute_checkpoints(request: dict[str, Any]) -> list[dict[str, Any]]:
    """What :func:`reference_checkpoints` asks the isolated process for."""
    reference_cls = load_class(request["reference"])
    return [
        _checkpoint(reference_cls, case_from_dict(c), request["batches"], request["stop"])
        for c in request["cases"]
    ]


def _checkpoint(reference_cls: Any, case: Case, data: Sequence[Any], stop: int) -> dict:
    model = make_model(case.seed)
    optimizer = reference_cls(optimizer_params(model, case), **case.kwargs)
    names = {id(p): name for name, p in model.named_parameters()}
    snapshots = [_snapshot(model)]
    state: dict[str, dict[str, Any]] = {}
    state_dict: dict[str, Any] = {}
    for i, (X, y) in enumerate(data[: case.steps], start=1):
        _one_step(optimizer, model, X, y)
        snapshots.append(_snapshot(model))
        if i == stop:
            state_dict = copy.deepcopy(optimizer.state_dict())
            state = {
                names[id(p)]: {k: _copy(v) for k, v in s.items()}
                for p, s in optimizer.state.items()
            }
    return {"snapshots": snapshots, "state": state, "state_dict": state_dict, "stop": stop}


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _one_step(optimizer: Any, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(X), y).backward()
    optimizer.step()


# --- the student's side ------------------------------------------------------------------------


def require_torch_optimizer(cls: Any, answer: str) -> None:
    """Fail unless ``cls`` extends ``torch.optim.Optimizer`` (and is not a torch optimizer)."""
    __tracebackhide__ = True
    require_own_class(cls, answer)
    if not issubclass(cls, torch.optim.Optimizer):
        raise CheckFailed(
            f"`{answer}` should extend torch.optim.Optimizer (class {answer}"
            "(torch.optim.Optimizer)), which keeps param groups and state and gives you "
            "state_dict() and load_state_dict()."
        )


@contextmanager
def student_code(answer: str, case: Case) -> Iterator[None]:
    """Run the student's optimizer: no torch.optim calls, no warnings, errors as feedback."""
    __tracebackhide__ = True
    try:
        with forbid_torch_optim(answer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(
            f"[{case.name}] your {answer} raised {type(exc).__name__}: {exc}."
        ) from None


def check_buffers(
    student_cls: Any,
    answer: str,
    reference: str,
    cases: Sequence[Case],
    stop: int,
    hint: BufferHint | None = None,
) -> None:
    """On every case, the student's ``self.state[p]`` buffers match the reference's after
    ``stop`` steps, and a run resumed from the reference's ``state_dict()`` there continues
    like the reference."""
    __tracebackhide__ = True
    require_torch_optimizer(student_cls, answer)
    data = batches()
    refname = reference.removeprefix("torch.optim.")
    for case, ref in zip(cases, reference_checkpoints(reference, cases, data, stop), strict=True):
        _check_state(student_cls, answer, refname, case, ref, data, hint)
        _check_resume(student_cls, answer, refname, case, ref, data)


def _check_state(
    student_cls: Any,
    answer: str,
    refname: str,
    case: Case,
    ref: Checkpoint,
    data: Sequence[Any],
    hint: BufferHint | None,
) -> None:
    __tracebackhide__ = True
    stop = ref.stop

    model = make_model(case.seed)
    with student_code(answer, case):
        optimizer = student_cls(optimizer_params(model, case), **case.kwargs)
        for X, y in data[:stop]:
            _one_step(optimizer, model, X, y)
    params = dict(model.named_parameters())
    for name, expected in ref.state.items():
        p = params[name]
        got = optimizer.state[p] if p in optimizer.state else {}
        group = next((g for g in optimizer.param_groups if any(q is p for q in g["params"])), {})
        for key, want in expected.items():
            if key == "step":  # a step counter is the student's own business
                continue
            where = f"[{case.name}] after {stop} steps, {answer}.state[p] of parameter '{name}'"
            if key not in got:
                raise CheckFailed(
                    f"{where} has no '{key}'. Keep this buffer in self.state[p]['{key}'] (the "
                    f"name torch.optim.{refname} uses), so that state_dict() saves it."
                )
            value = got[key]
            if not isinstance(value, torch.Tensor) or value.shape != want.shape:
                raise CheckFailed(
                    f"{where}['{key}'] should be a tensor shaped like the parameter, "
                    f"{tuple(want.shape)}; it is {_describe(value)}."
                )
            value = value.detach().to(want.dtype)
            if torch.allclose(value, want, rtol=1e-7, atol=1e-9):
                continue
            gap = (value - want).abs().nan_to_num(float("inf"))
            flat = int(gap.argmax())
            message = (
                f"{where}['{key}'] differs from torch.optim.{refname}'s: at flat index {flat} "
                f"it is {float(value.flatten()[flat]):.10g}, expected "
                f"{float(want.flatten()[flat]):.10g}."
            )
            extra = hint(key, value, want, group) if hint is not None else None
            if extra:
                message += f" This looks like a typical mistake: {extra}"
            raise CheckFailed(message)


def _check_resume(
    student_cls: Any, answer: str, refname: str, case: Case, ref: Checkpoint, data: Sequence[Any]
) -> None:
    __tracebackhide__ = True
    model = make_model(case.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(ref.snapshots[ref.stop][name])
    run = [_snapshot(model)]
    resumed = dataclasses.replace(case, name=f"{case.name}, resumed from a checkpoint")
    with student_code(answer, resumed):
        optimizer = student_cls(optimizer_params(model, case), **case.kwargs)
        optimizer.load_state_dict(copy.deepcopy(ref.state_dict))
        for X, y in data[ref.stop : case.steps]:
            _one_step(optimizer, model, X, y)
            run.append(_snapshot(model))
    diff = first_difference(run, ref.snapshots[ref.stop :])
    if diff is not None:
        diff = dataclasses.replace(diff, step=diff.step + ref.stop)
        raise CheckFailed(
            f"[{case.name}, resumed from a checkpoint] we saved torch.optim.{refname}'s "
            f"state_dict() after {ref.stop} steps, loaded it into a new {answer} with "
            f"load_state_dict() and went on; {diff.describe('torch.optim.' + refname)} "
            f"Keep every buffer in self.state[p], under torch.optim.{refname}'s names, and "
            "read it back from there at each step."
        )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
