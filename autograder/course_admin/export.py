"""Grades as CSV: one row per student and week, points per exercise, total, status, lateness."""

from __future__ import annotations

import csv
from pathlib import Path

from nbgrader.api import Gradebook

from course_admin.results import read_report


def exercise_of(grade_id: str) -> str:
    """The exercise id a test cell belongs to: its grade id up to ``_test``."""
    return grade_id.split("_test", 1)[0]


def export_csv(db_url: str, reports: Path, target: Path) -> int:
    """Write every graded submission to ``target``; return the number of rows."""
    rows = []
    exercises: dict[str, list[str]] = {}
    with Gradebook(db_url) as gb:
        for assignment in sorted(gb.assignments, key=lambda a: a.name):
            report = read_report(reports, assignment.name)
            for submission in sorted(assignment.submissions, key=lambda s: s.student.id):
                points: dict[str, float] = {}
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        name = exercise_of(grade.name)
                        points[name] = points.get(name, 0.0) + (grade.score or 0.0)
                        exercises.setdefault(assignment.name, [])
                        if name not in exercises[assignment.name]:
                            exercises[assignment.name].append(name)
                status = report.get(submission.student.id, {})
                rows.append(
                    {
                        "student": submission.student.id,
                        "week": assignment.name,
                        **{f"{assignment.name}:{k}": v for k, v in points.items()},
                        "total": submission.score,
                        "max": submission.max_score,
                        "submitted": submission.timestamp or "",
                        "hours_late": _hours_late(submission),
                        "status": status.get("status", "graded"),
                        "reason": status.get("reason", ""),
                    }
                )
    columns = ["student", "week"]
    for week, names in exercises.items():
        columns += [f"{week}:{name}" for name in names]
    columns += ["total", "max", "submitted", "hours_late", "status", "reason"]
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _hours_late(submission) -> float | str:
    """Hours past the week's due date (with any extension); empty without a time or a due date."""
    if submission.timestamp is None or submission.duedate is None:
        return ""
    return round(submission.total_seconds_late / 3600, 2)
