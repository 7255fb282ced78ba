"""Student side: Week 3's producers (the shared ones are in ``core.produce``).

``square_average_runs`` collects what the student's ``square_average`` returns for each list
of gradients it is given.
"""

from __future__ import annotations

from typing import Any

from course_grading.core.harness import attempt, plain


def square_average_runs(square_average: Any, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each case (``grads``, ``alpha``): the averages returned, one by one, or the error."""
    outcomes = []
    for case in cases:

        def call(case: dict[str, Any] = case) -> list[Any]:
            grads = [g.clone() for g in case["grads"]]
            return [plain(v) for v in list(square_average(grads, case["alpha"]))]

        averages, error = attempt(call)
        outcomes.append({"error": error} if error else {"averages": averages})
    return outcomes
