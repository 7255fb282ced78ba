"""Trusted side: the shared hidden check for optimizers, many steps against ``torch.optim``.

The student's optimizer trains the checks' model on the given cases in the sandbox
(:func:`course_grading.core.produce.optimizer_runs`); here the same runs of the ``torch.optim``
reference are compared with them step by step, and the message says where they first part
and, when a catalogued mistake reproduces the student's run, which mistake it looks like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from course_grading.core.checks import CheckFailed, Part
from course_grading.core.compare import first_difference
from course_grading.core.mistakes import Mistake, identify
from course_grading.core.references import TORCH_DEFAULTS, digit_batches, reference_runs
from course_grading.core.runs import Case, Snapshots


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer exercise: the answer's name, its torch.optim reference, its mistakes.

    ``explain(message)``, if given, may add a hint to a failure message that names no
    catalogued mistake.
    """

    answer: str
    reference: str
    mistakes: tuple[Mistake, ...] = ()
    explain: Callable[[str], str] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    # What a failure message adds when a run never changed the parameters (None: the
    # sentence of :meth:`unchanged_hint`).
    never_changed: str | None = None
    # ``raised(case, error)``: the message when the answer raised on ``case`` (None: the one
    # of :meth:`raised_message`).
    raised: Callable[[Case, dict[str, Any]], str] | None = None

    @classmethod
    def of(cls, answer: str, mistakes: Sequence[Mistake] = (), **kwargs: Any) -> OptimizerSpec:
        """The spec of an answer named like its ``torch.optim`` class (``"SGD"``, ...)."""
        reference = f"torch.optim.{answer}"
        return cls(answer, reference, tuple(mistakes), defaults=TORCH_DEFAULTS[answer], **kwargs)

    def raised_message(self, case: Case, error: dict[str, Any]) -> str:
        """The failure message when the answer raised ``error`` on ``case``."""
        if self.raised is not None:
            return self.raised(case, error)
        hint = ""
        if case.frozen and error["type"] in ("AttributeError", "TypeError"):
            hint = " Parameters whose .grad is None (frozen ones) must be skipped."
        return (
            f"[{case.name}] your {self.answer} raised {error['type']}: "
            f"{str(error['message']).rstrip('.')}.{hint}"
        )

    def unchanged_hint(self) -> str:
        """What a failure message adds when a run never changed the parameters."""
        if self.never_changed is not None:
            return self.never_changed
        return (
            f" Your {self.answer} never changed the parameters: update them in place "
            "(p.add_(...), p -= ...) instead of binding a new tensor to a name."
        )


def against_torch(
    spec: OptimizerSpec,
    cases: Sequence[Case],
    producer: str = "core.produce:optimizer_runs",
    **inputs: Any,
) -> Part:
    """The student's optimizer matches ``spec.reference`` after every step of every case.

    ``producer`` runs the cases in the sandbox (with ``inputs`` beyond the cases and batches).
    """
    batches = digit_batches()
    return Part(
        producer,
        judge_against_torch,
        inputs={"cases": [c.to_request() for c in cases], "batches": batches, **inputs},
        reference=lambda: reference_runs(spec.reference, cases, batches),
        context={"spec": spec, "cases": list(cases)},
    )


def judge_against_torch(part: Part, found: dict[str, Any]) -> None:
    """See :func:`against_torch`."""
    spec: OptimizerSpec = part.context["spec"]
    cases: list[Case] = part.context["cases"]
    runs = found["runs"]
    error = found.get("error")
    for index, (case, expected) in enumerate(zip(cases, part.expected, strict=True)):
        if error is not None and error["case"] == index:
            raise CheckFailed(spec.raised_message(case, error))
        actual = runs[index]
        diff = first_difference(actual, expected)
        if diff is None:
            continue
        message = f"[{case.name}] {diff.describe(spec.reference)}"
        if diff.step > 0 and unchanged(actual):
            message += spec.unchanged_hint()
        else:
            mistake = identify(actual, case, part.inputs["batches"], spec.mistakes, spec.defaults)
            if mistake is not None:
                message += f" This looks like a typical mistake: {mistake.sentence}"
            elif spec.explain is not None:
                message = spec.explain(message)
        raise CheckFailed(message)


def unchanged(run: Snapshots) -> bool:
    """Whether a run ended with exactly the parameters it started with."""
    return all(torch.equal(run[0][k], run[-1][k]) for k in run[0])
