"""The gradebook: read scores from it (autograde's exit code says nothing), write results."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from nbgrader.api import (
    Assignment,
    BaseCell,
    Grade,
    Gradebook,
    MissingEntry,
    Notebook,
    SubmittedAssignment,
    SubmittedNotebook,
)
from sqlalchemy.exc import SAWarning

from course_admin.results import Status, StudentResult


@dataclass(frozen=True)
class CellScore:
    """Points for one graded test cell of one submission."""

    notebook: str
    grade_id: str
    score: float
    max_score: float
    present: bool = True  # False when the cell was missing from the submission


def cell_scores(db_url: str, week: str, student: str) -> list[CellScore]:
    """Every test cell's score for ``student`` on ``week`` (empty if not graded)."""
    with Gradebook(db_url) as gb:
        try:
            submission = gb.find_submission(week, student)
        except MissingEntry:
            return []
        out = []
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if grade.cell.cell_type != "code":
                    continue
                # A test cell with no automatic score was missing from the submission: zero.
                auto = grade.auto_score or 0.0
                score = grade.manual_score if grade.manual_score is not None else auto
                out.append(
                    CellScore(
                        notebook.name,
                        grade.name,
                        score,
                        grade.max_score,
                        present=grade.auto_score is not None,
                    )  # fmt: skip
                )
        return out


# (student, week) -> the submission's time and (notebook, grade id) -> (auto, manual) scores.
Snapshot = dict[tuple[str, str], dict[str, Any]]


def snapshot(db_url: str) -> Snapshot:
    """Every submission in the gradebook, with its time and all its scores (one query)."""
    out: Snapshot = {}
    with Gradebook(db_url) as gb:
        rows = (
            gb.db.query(
                SubmittedAssignment.student_id,
                Assignment.name,
                SubmittedAssignment.timestamp,
                Notebook.name,
                BaseCell.name,
                Grade.auto_score,
                Grade.manual_score,
            )
            .select_from(Grade)
            .join(SubmittedNotebook, Grade.notebook_id == SubmittedNotebook.id)
            .join(SubmittedAssignment, SubmittedNotebook.assignment_id == SubmittedAssignment.id)
            .join(Assignment, SubmittedAssignment.assignment_id == Assignment.id)
            .join(Notebook, SubmittedNotebook.notebook_id == Notebook.id)
            .join(BaseCell, Grade.cell_id == BaseCell.id)
        )
        for student, week, when, notebook, grade, auto, manual in rows:
            entry = out.setdefault((student, week), {"timestamp": when, "grades": {}})
            entry["grades"][(notebook, grade)] = (auto, manual)
    return out


def restore(db_url: str, before: Snapshot, keys: set[tuple[str, str]]) -> None:
    """Put the submissions ``keys`` back as ``before`` had them (removed if it had none)."""
    with Gradebook(db_url) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        for student, week in sorted(keys):
            try:
                gb.remove_submission(week, student)
            except MissingEntry:
                pass
            if (student, week) not in before:
                continue
            entry = before[(student, week)]
            gb.update_or_create_student(student)
            when = {"timestamp": entry["timestamp"]} if entry["timestamp"] else {}
            submission = gb.add_submission(week, student, **when)
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    auto, manual = entry["grades"].get((notebook.name, grade.name), (None, None))
                    grade.auto_score, grade.manual_score = auto, manual
            gb.db.commit()


def record(db_url: str, week: str, result: StudentResult) -> None:
    """Write one student's result into the gradebook (replacing an earlier one)."""
    with Gradebook(db_url) as gb, warnings.catch_warnings():
        # nbgrader's add_submission triggers harmless SQLAlchemy autoflush warnings.
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(result.student)
        try:
            gb.remove_submission(week, result.student)
        except MissingEntry:
            pass
        when = {"timestamp": result.submitted} if result.submitted else {}
        gb.add_submission(week, result.student, **when)
        submission = gb.find_submission(week, result.student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                score, _ = result.scores.get(grade.name, [0.0, grade.max_score])
                grade.auto_score = score
                grade.manual_score = 0.0 if result.status == Status.FLAGGED else None
        gb.db.commit()
