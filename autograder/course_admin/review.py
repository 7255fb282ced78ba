"""Review a flagged submission: see why it was flagged, then give or withhold its points.

A submission whose code the integrity scan flags is graded like any other, but its points are
withheld (nbgrader's manual score 0 on every cell) until an instructor looks at it. Giving the
points clears those manual scores, so the autograder's own scores count; withholding keeps
them at 0. nbgrader's formgrader can do the same cell by cell (it shows the autograded
notebook and lets a grader type a manual score); this is the quick way from the shell.
"""

from __future__ import annotations

from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry

from course_admin.integrity import flagged_cells
from course_admin.paths import db_url
from course_admin.results import Status, read_report, write_entry


def show(course_root: Path, week: str, student: str) -> str:
    """What an instructor needs to decide: the reason, the flagged cells, the scores."""
    entry = read_report(course_root / "reports", week).get(student)
    if entry is None:
        raise SystemExit(f"course: {student} has no graded submission of {week}")
    lines = [f"{student}, {week}: {entry['status']}: {entry['reason']}"]
    for notebook, index, source, reasons in flagged_cells(
        course_root / "submitted" / student / week
    ):
        lines.append(f"\n{notebook}, cell {index} ({'; '.join(reasons)}):")
        lines += [f"    {line}" for line in source.splitlines()]
    lines.append("\npoints per test cell (autograder / counted):")
    with Gradebook(db_url(course_root)) as gb:
        for notebook in gb.find_submission(week, student).notebooks:
            for grade in notebook.grades:
                if grade.cell.cell_type == "code":
                    counted = grade.score if grade.score is not None else 0
                    lines.append(f"  {grade.name}: {grade.auto_score} / {counted}")
    return "\n".join(lines)


def decide(course_root: Path, week: str, student: str, give: bool) -> None:
    """Give (``give=True``) or withhold a reviewed submission's points."""
    report = read_report(course_root / "reports", week)
    if student not in report:
        raise SystemExit(f"course: {student} has no graded submission of {week}")
    with Gradebook(db_url(course_root)) as gb:
        try:
            submission = gb.find_submission(week, student)
        except MissingEntry:
            raise SystemExit(f"course: {student}'s {week} is not in the gradebook") from None
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                grade.manual_score = None if give else 0.0
        gb.db.commit()
    entry = report[student]
    entry["status"] = (Status.REVIEWED if give else Status.WITHHELD).value
    decision = "points given after review" if give else "points withheld after review"
    entry["reason"] = f"{decision} ({entry['reason']})"
    write_entry(course_root / "reports", week, student, entry)
