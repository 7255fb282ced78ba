"""Trusted side: checks of the buffers an optimizer keeps (momentum, running averages).

From Week 2 on, student optimizers extend ``torch.optim.Optimizer`` and keep their buffers in
``self.state[p]`` under the names ``torch.optim`` uses, so ``state_dict()`` and
``load_state_dict()`` carry them. :func:`buffers` compares those buffers with the reference's
after some steps, and resumes a run from a checkpoint the reference wrote.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from course_grading.core.checks import CheckFailed, Part
from course_grading.core.compare import first_difference
from course_grading.core.optimizers import OptimizerSpec
from course_grading.core.references import digit_batches, load_class
from course_grading.core.runs import Case, make_model, optimizer_params, snapshot

# hint(key, student_value, reference_value, group) -> a sentence naming the mistake, or None.
BufferHint = Callable[[str, torch.Tensor, torch.Tensor, dict], str | None]


@dataclasses.dataclass
class Checkpoint:
    """A reference run with its optimizer's state part-way.

    ``snapshots`` are the parameters after every step of the whole case; ``state`` maps each
    parameter's name to its state after ``stop`` steps; ``state_dict`` is the reference's own
    ``optimizer.state_dict()`` at that point.
    """

    snapshots: list[dict[str, torch.Tensor]]
    state: dict[str, dict[str, Any]]
    state_dict: dict[str, Any]
    stop: int


def buffers(
    spec: OptimizerSpec, cases: Sequence[Case], stop: int, hint: BufferHint | None = None
) -> Part:
    """On every case, the student's ``self.state[p]`` buffers match the reference's after
    ``stop`` steps, and a run resumed from the reference's ``state_dict()`` there continues
    like the reference."""
    batches = digit_batches()

    @functools.cache
    def checkpoints() -> list[Checkpoint]:
        return [reference_checkpoint(spec.reference, c, batches, stop) for c in cases]

    def inputs() -> dict[str, Any]:
        return {
            "cases": [c.to_request() for c in cases],
            "batches": batches,
            "stop": stop,
            "resume_from": [
                {"params": c.snapshots[stop], "state_dict": c.state_dict} for c in checkpoints()
            ],
        }

    return Part(
        "core.produce:optimizer_checkpoints",
        judge_buffers,
        inputs=inputs,
        reference=checkpoints,
        context={"spec": spec, "cases": list(cases), "hint": hint},
    )


def reference_checkpoint(
    reference: str, case: Case, batches: Sequence[Any], stop: int
) -> Checkpoint:
    """Run the reference (a dotted class name) on ``case``, keeping its state after ``stop``."""
    model = make_model(case.seed)
    optimizer = load_class(reference)(optimizer_params(model, case), **case.kwargs)
    names = {id(p): name for name, p in model.named_parameters()}
    snapshots = [snapshot(model)]
    state: dict[str, dict[str, Any]] = {}
    state_dict: dict[str, Any] = {}
    for i, (X, y) in enumerate(batches[: case.steps], start=1):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        optimizer.step()
        snapshots.append(snapshot(model))
        if i == stop:
            state_dict = copy.deepcopy(optimizer.state_dict())
            state = {
                names[id(p)]: {k: _copy(v) for k, v in s.items()}
                for p, s in optimizer.state.items()
            }
    return Checkpoint(snapshots, state, state_dict, stop)


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def judge_buffers(part: Part, found: dict[str, Any]) -> None:
    """See :func:`buffers`."""
    spec: OptimizerSpec = part.context["spec"]
    error = found.get("error")
    raised = f"{error['type']}: {str(error['message']).rstrip('.')}." if error else ""
    for index, (case, ref) in enumerate(zip(part.context["cases"], part.expected, strict=True)):
        if error is not None and error["case"] == index and not error["resumed"]:
            raise CheckFailed(f"[{case.name}] your {spec.answer} raised {raised}")
        _judge_state(spec, case, ref, found["cases"][index]["state"], part.context["hint"])
        if error is not None and error["case"] == index:
            raise CheckFailed(
                f"[{case.name}, resumed from a checkpoint] your {spec.answer} raised {raised}"
            )
        _judge_resume(spec, case, ref, found["cases"][index]["resumed"])


def _judge_state(
    spec: OptimizerSpec, case: Case, ref: Checkpoint, got: dict[str, Any], hint: BufferHint | None
) -> None:
    refname = spec.reference.removeprefix("torch.optim.")
    for name, expected in ref.state.items():
        state = got[name]["state"]
        for key, want in expected.items():
            if key == "step":  # a step counter is the student's own business
                continue
            where = (
                f"[{case.name}] after {ref.stop} steps, {spec.answer}.state[p] of parameter "
                f"'{name}'"
            )
            if key not in state:
                raise CheckFailed(
                    f"{where} has no '{key}'. Keep this buffer in self.state[p]['{key}'] (the "
                    f"name torch.optim.{refname} uses), so that state_dict() saves it."
                )
            value = state[key]
            if not isinstance(value, torch.Tensor) or value.shape != want.shape:
                raise CheckFailed(
                    f"{where}['{key}'] should be a tensor shaped like the parameter, "
                    f"{tuple(want.shape)}; it is {_describe(value)}."
                )
            value = value.to(want.dtype)
            if torch.allclose(value, want, rtol=1e-7, atol=1e-9):
                continue
            gap = (value - want).abs().nan_to_num(float("inf"))
            flat = int(gap.argmax())
            message = (
                f"{where}['{key}'] differs from torch.optim.{refname}'s: at flat index {flat} "
                f"it is {float(value.flatten()[flat]):.10g}, expected "
                f"{float(want.flatten()[flat]):.10g}."
            )
            extra = hint(key, value, want, got[name]["group"]) if hint is not None else None
            if extra:
                message += f" This looks like a typical mistake: {extra}"
            raise CheckFailed(message)


def _judge_resume(spec: OptimizerSpec, case: Case, ref: Checkpoint, run: list) -> None:
    refname = spec.reference.removeprefix("torch.optim.")
    diff = first_difference(run, ref.snapshots[ref.stop :])
    if diff is not None:
        diff = dataclasses.replace(diff, step=diff.step + ref.stop)
        raise CheckFailed(
            f"[{case.name}, resumed from a checkpoint] we saved torch.optim.{refname}'s "
            f"state_dict() after {ref.stop} steps, loaded it into a new {spec.answer} with "
            f"load_state_dict() and went on; {diff.describe('torch.optim.' + refname)} "
            f"Keep every buffer in self.state[p], under torch.optim.{refname}'s names, and "
            "read it back from there at each step."
        )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict) and "unsupported" in value:
        return f"a {value['unsupported']}"
    return f"a {type(value).__name__}"
