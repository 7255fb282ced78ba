"""Trusted side: an optimizer exercise's test cells and mistake catalogue, built from tables.

A week whose answer is an optimizer class checks it the same way in every test cell: the class
is the student's own (the first cell also reads its constructor's keywords and defaults), then
it trains the cell's cases against ``torch.optim``, then come the cell's own parts. The week's
``cases.py`` holds the cases, by grade id (the last cell's frozen layer and param groups:
:func:`frozen_and_grouped`), and :func:`optimizer_cells` builds the cells from them
(:func:`subclass_cells`, where the class must extend ``torch.optim.Optimizer``). Mistakes that
differ only by the keywords of one rule factory can be a table too: rows of a name, those
keywords and the sentence the student reads (:func:`catalogue`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from course_grading.core.checks import CheckFailed, Checks, Part
from course_grading.core.interface import own_class, signature
from course_grading.core.mistakes import Mistake, Rule
from course_grading.core.optimizers import OptimizerSpec, against_torch, judge_against_torch
from course_grading.core.runs import Case

# grade id -> the cases its test cell runs against torch.optim (a week's cases.py holds these).
CaseTable = Mapping[str, Sequence[Case]]

# runs(spec, cases) -> the part that trains ``cases`` against ``spec.reference``.
Runs = Callable[[OptimizerSpec, Sequence[Case]], Part]

# (name, keywords of the rule factory, sentence): one typical mistake.
MistakeRow = tuple[str, dict[str, Any], str]


def optimizer_cells(
    spec: OptimizerSpec,
    table: CaseTable,
    *,
    runs: Runs = against_torch,
    keywords: Mapping[str, Any] | None = None,
    extends_optimizer: Collection[str] = (),
    then: Mapping[str, Sequence[Part]] | None = None,
) -> Checks:
    """A test cell for each entry of ``table`` (grade id -> cases), in the table's order.

    Each cell checks that the class is the student's own (and extends
    ``torch.optim.Optimizer`` where its grade id is in ``extends_optimizer``), then runs the
    cell's cases with ``runs``, then the cell's parts in ``then``. The first cell also checks
    the constructor's ``keywords`` and their defaults (``spec.defaults`` unless given).
    """
    cells: Checks = {}
    for grade_id, cases in table.items():
        parts = [own_class(spec.answer, extends_optimizer=grade_id in extends_optimizer)]
        if not cells:
            wanted = spec.defaults if keywords is None else keywords
            parts.append(signature(spec.answer, wanted, spec.reference))
        parts.append(runs(spec, cases))
        parts.extend((then or {}).get(grade_id, ()))
        cells[grade_id] = parts
    return cells


def subclass_cells(
    spec: OptimizerSpec, table: CaseTable, *, hint: Callable[[str], str], state: Sequence[Part]
) -> Checks:
    """:func:`optimizer_cells` for a class that must extend ``torch.optim.Optimizer`` and keep
    its buffers in ``self.state`` (Weeks 2 and 3): the table's first and last cells check that
    it extends the base class, the last cell ends with the ``state`` parts (buffers, a step with
    a closure), and every run's failure message passes through ``hint`` (:func:`hinted_runs`).
    """
    first, *_, last = table
    return optimizer_cells(
        spec, table, runs=hinted_runs(hint), extends_optimizer=(first, last), then={last: state}
    )


def frozen_and_grouped(
    *, frozen: dict[str, Any], grouped: dict[str, Any], first: dict[str, Any], rest: dict[str, Any]
) -> tuple[Case, Case]:
    """The runs of the cell that ends an optimizer's case table: ``frozen``'s settings with
    the first layer frozen, and ``grouped``'s in two param groups, the first linear layer (with
    the overrides ``first``) and the other two (with ``rest``)."""
    return (
        Case("a frozen first layer", frozen, frozen=(0,)),
        Case(
            "param groups with their own settings",
            grouped,
            groups=({"layers": (0,), **first}, {"layers": (2, 4), **rest}),
        ),
    )


def hinted_runs(hint: Callable[[str], str]) -> Runs:
    """:func:`~course_grading.core.optimizers.against_torch`, with every failure message
    passed through ``hint`` (which may add a sentence), also when the student's code raised."""

    def runs(spec: OptimizerSpec, cases: Sequence[Case]) -> Part:
        part = against_torch(spec, cases)
        context = {**part.context, "hint": hint}
        return dataclasses.replace(part, judge=judge_hinted_runs, context=context)

    return runs


def judge_hinted_runs(part: Part, found: dict[str, Any]) -> None:
    """See :func:`hinted_runs`."""
    try:
        judge_against_torch(part, found)
    except CheckFailed as failure:
        raise CheckFailed(part.context["hint"](str(failure))) from None


def catalogue(
    prefix: str, factory: Callable[..., Rule], rows: Iterable[MistakeRow], **always: Any
) -> tuple[Mistake, ...]:
    """The mistake ``{prefix}/{name}`` of each row, in order: its rule is
    ``factory(**always, **keywords)``, its sentence the row's."""
    return tuple(
        Mistake(f"{prefix}/{name}", sentence, factory(**always, **keywords))
        for name, keywords, sentence in rows
    )
