"""The shared hidden check for optimizers: many steps against ``torch.optim`` on a real model."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from course_grading.compare import CheckFailed, first_difference
from course_grading.guards import forbid_torch_optim, require_own_class
from course_grading.mistakes import Mistake, identify
from course_grading.reference import reference_runs
from course_grading.runs import Case, Snapshots, make_batches, run_case


@functools.cache
def batches(steps: int = 40) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed mini-batches every optimizer check trains on."""
    return make_batches(steps)


def check_against_torch(
    student_cls: Any,
    answer: str,
    reference: str,
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    defaults: dict[str, Any] | None = None,
    expected_runs: Sequence[Snapshots] | None = None,
) -> None:
    """Fail with a precise message unless ``student_cls`` matches ``reference`` on every case.

    ``reference`` is the dotted name of the ``torch.optim`` class; ``mistakes`` and their
    ``defaults`` (the reference's constructor defaults) let the message name a typical error.
    ``expected_runs``, when a week has already computed the reference runs, saves a process.
    """
    __tracebackhide__ = True
    require_own_class(student_cls, answer)
    data = batches()
    if expected_runs is None:
        expected_runs = reference_runs(reference, cases, data)
    for case, expected in zip(cases, expected_runs, strict=True):
        actual = _run_student(student_cls, answer, case, data)
        diff = first_difference(actual, expected)
        if diff is None:
            continue
        message = f"[{case.name}] {diff.describe(reference)}"
        if diff.step > 0 and _unchanged(actual):
            message += (
                f" Your {answer} never changed the parameters: update them in place "
                "(p.add_(...), p -= ...) instead of binding a new tensor to a name."
            )
        else:
            mistake = identify(actual, case, data, mistakes, defaults or {})
            if mistake is not None:
                message += f" This looks like a typical mistake: {mistake.sentence}"
        raise CheckFailed(message)


def _run_student(student_cls: Any, answer: str, case: Case, data: list) -> Snapshots:
    __tracebackhide__ = True
    try:
        # nbgrader fails a cell that writes to stderr: a warning from the student's code is
        # not a wrong answer, so keep warnings out of the output.
        with forbid_torch_optim(answer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run_case(student_cls, case, data)
    except CheckFailed:
        raise
    except Exception as exc:
        hint = ""
        if case.frozen and isinstance(exc, (AttributeError, TypeError)):
            hint = " Parameters whose .grad is None (frozen ones) must be skipped."
        raise CheckFailed(
            f"[{case.name}] your {answer} raised {type(exc).__name__}: {exc}.{hint}"
        ) from None


def _unchanged(run: Snapshots) -> bool:
    return all(torch.equal(run[0][k], run[-1][k]) for k in run[0])
