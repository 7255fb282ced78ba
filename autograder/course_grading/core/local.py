"""A hidden check run entirely in this process, for the tests and an instructor's own runs.

While grading, the producers run in the sandbox and the judges outside it. Here both run in
one process: right for the course's tests and for an instructor executing a source notebook,
never for a student's submission (nothing here is switched off or kept apart).
"""

from __future__ import annotations

import copy
from typing import Any

from course_grading.core.checks import CheckFailed, plan, weeks
from course_grading.core.harness import produce


def outputs_here(assignment: str, grade_id: str, *answers: Any) -> dict[str, Any]:
    """What the sandbox would send back for ``grade_id`` with ``answers`` handed in."""
    parts = plan(assignment)[grade_id]
    # A fresh copy of the inputs for each run, as the sandbox reads them from disk each time.
    requests = [copy.deepcopy(p.request()) for p in parts]
    return {"grade_id": grade_id, "parts": [produce(r, answers) for r in requests]}


def run_check(assignment: str, grade_id: str, *answers: Any) -> str | None:
    """The verdict of ``grade_id``'s hidden check on ``answers``: ``None`` or the message."""
    from course_grading.core.checks import verdict

    return verdict(assignment, grade_id, outputs_here(assignment, grade_id, *answers))


def check_here(grade_id: str, *answers: Any) -> None:
    """Run ``grade_id``'s hidden check on ``answers``; raise CheckFailed with its message."""
    __tracebackhide__ = True
    assignment = assignment_of(grade_id)
    message = run_check(assignment, grade_id, *answers)
    if message is not None:
        raise CheckFailed(message)


def assignment_of(grade_id: str) -> str:
    """The week whose notebook has the test cell ``grade_id`` (grade ids are unique)."""
    found = [week for week in weeks() if grade_id in plan(week)]
    if len(found) != 1:
        raise LookupError(f"{len(found)} weeks have a hidden check {grade_id!r}")
    return found[0]
