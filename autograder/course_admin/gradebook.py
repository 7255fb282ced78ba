"""Read scores from nbgrader's gradebook (autograde's exit code does not say whether tests pass)."""

from __future__ import annotations

from dataclasses import dataclass

from nbgrader.api import Gradebook, MissingEntry


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


def snapshot(db_url: str) -> dict[tuple[str, str, str, str], tuple[float | None, float | None]]:
    """Every grade in the gradebook: (student, week, notebook, grade_id) -> (auto, manual)."""
    out = {}
    with Gradebook(db_url) as gb:
        for assignment in gb.assignments:
            for submission in assignment.submissions:
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        key = (submission.student.id, assignment.name, notebook.name, grade.name)
                        out[key] = (grade.auto_score, grade.manual_score)
    return out
