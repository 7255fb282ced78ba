"""Trusted side: what a week's hidden checks are, and the verdict on what a submission handed in.

Each week's ``checks.py`` defines ``checks()``: for every test cell (by grade id), the
:class:`Part` s of its hidden check. A part names a producer on the student side and the inputs
it gets; the producer's outputs come back from the sandbox, and the part's judge compares them
with the part's expected values (computed here, from a well-kept reference) and either passes
or raises :class:`CheckFailed` with the message the student reads.

This module and everything it imports run only where no student code runs: the grading
worker, ``./course release`` and the tests.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import course_grading

NO_ANSWER = (
    "this cell's hidden check received nothing from your code: the cell stopped (or was "
    "changed) before it handed your answer in. Run it again after fixing the error above."
)


class CheckFailed(AssertionError):
    """A hidden check found a difference; the message is written for the student."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback (local runs): only the message.
        return [f"\x1b[0;31mCheckFailed\x1b[0m: {self}"]


@dataclass
class Part:
    """One step of a test cell's hidden check.

    ``producer`` is ``"module:function"`` under ``course_grading`` on the student side; it is
    called with the handed-in objects and ``inputs``, or with what ``inputs()`` returns where
    they need the reference's own runs (made only when the kit is built, so that a batch whose
    expected values come from the cache never runs the reference). ``judge(part, outputs)``
    raises :class:`CheckFailed` unless the outputs are right; it may use ``part.expected`` (what
    ``reference()`` computes, once, on first use) and ``context`` (anything else it needs:
    the answer's name, a mistake catalogue). Only ``producer`` and ``inputs`` reach the
    sandbox.
    """

    producer: str
    judge: Callable[[Part, Any], None]
    inputs: dict[str, Any] | Callable[[], dict[str, Any]] = field(default_factory=dict)
    reference: Callable[[], Any] | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def expected(self) -> Any:
        """The reference's answers for this part (computed on first use)."""
        return self.reference() if self.reference is not None else None

    def request(self) -> dict[str, Any]:
        """What the sandbox receives for this part."""
        inputs = self.inputs() if callable(self.inputs) else self.inputs
        return {"producer": self.producer, "inputs": inputs}


Checks = dict[str, list[Part]]


def week_package(assignment: str) -> str:
    """The grading subpackage of an assignment: ``week01_sgd`` -> ``week01``."""
    return assignment.split("_", 1)[0]


def weeks() -> list[str]:
    """Every week that has grading code (``week01``, ``week02``, ...)."""
    root = Path(course_grading.__file__).parent
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(root)])
        if info.ispkg and info.name.startswith("week")
    )


def _week(assignment: str) -> Any:
    return importlib.import_module(f"course_grading.{week_package(assignment)}.checks")


def plan(assignment: str) -> Checks:
    """Every test cell's hidden check for ``assignment``, by grade id (built once)."""
    return _plan(week_package(assignment))


@functools.cache
def _plan(week: str) -> Checks:
    return _week(week).checks()


def warm_up(assignment: str) -> None:
    """Build the plan and compute every expected value now (while the sandbox runs)."""
    expected_values(assignment)


def expected_values(assignment: str) -> dict[str, list[Any]]:
    """Every part's expected values, by grade id (computed now where not yet)."""
    return {gid: [part.expected for part in parts] for gid, parts in plan(assignment).items()}


def use_expected(assignment: str, values: dict[str, list[Any]]) -> None:
    """Give the plan's parts the expected values :func:`expected_values` computed earlier
    (from the same grading code), so that this process need not run the references."""
    for grade_id, parts in plan(assignment).items():
        for part, value in zip(parts, values[grade_id], strict=True):
            part.expected = value  # a cached_property: this is its cached value


def hidden_torch(assignment: str) -> dict[str, str]:
    """The torch modules switched off in the sandbox while ``assignment`` is graded, and why."""
    return dict(getattr(_week(assignment), "HIDDEN_TORCH", {}))


def hidden_ops(assignment: str) -> dict[str, str]:
    """The ATen operators switched off in the sandbox for ``assignment`` (besides those of
    the hidden modules), and why."""
    return dict(getattr(_week(assignment), "HIDDEN_OPS", {}))


def demonstrations(assignment: str) -> dict[str, str]:
    """The notebook's demonstration cells that grading does not run (cell id -> what it shows).

    A week lists a cell here when it only shows what answers checked elsewhere do, takes a
    noticeable share of the notebook's time, is not graded, and binds nothing a later cell
    needs (``tests/test_grading_sides.py`` checks the last two).
    """
    return dict(getattr(_week(assignment), "DEMONSTRATIONS", {}))


def verdict(assignment: str, grade_id: str, outputs: Any) -> str | None:
    """``None`` if the hidden check of ``grade_id`` passes on ``outputs``, else the message.

    ``outputs`` is what the sandbox sent back for the cell (``None`` if nothing came). It is
    untrusted data: anything malformed fails the check.
    """
    parts = plan(assignment).get(grade_id)
    if parts is None:
        return f"grader problem: no hidden check is defined for {grade_id}."
    if outputs is None:
        return NO_ANSWER
    got = outputs.get("parts") if isinstance(outputs, dict) else None
    if not isinstance(got, list) or len(got) != len(parts):
        return "what this cell handed in does not fit its hidden check; " + NO_ANSWER
    for part, output in zip(parts, got, strict=True):
        _ = part.expected  # a reference that cannot be computed is the grader's fault: raise
        if isinstance(output, dict) and "producer_failed" in output:
            return (
                f"the hidden check could not run your code: {error_text(output['producer_failed'])}"
            )
        try:
            part.judge(part, output)
        except CheckFailed as failure:
            return str(failure)
        except Exception as exc:  # malformed outputs: fail, never crash the grader
            return (
                "the hidden check could not read what your code produced "
                f"({type(exc).__name__}); run the cell again and look for errors above."
            )
    return None


def error_text(error: Any) -> str:
    """``"TypeError: message"`` for an error the sandbox described (robust to junk)."""
    if not isinstance(error, dict):
        return "an unreadable error"
    return f"{error.get('type')}: {error.get('message')}"
