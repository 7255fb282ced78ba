"""``python -m course_admin COMMAND``: what ./course runs for instructors."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from course_admin.gradebook import cell_scores
from course_admin.nbgrader_cli import nbgrader
from course_admin.paths import AUTOGRADER, db_url, weeks


def release(week_ids: list[str], course_root: Path = AUTOGRADER) -> None:
    """Generate release/ and solutions/ for the given weeks from source/."""
    for week in week_ids:
        nbgrader("generate_assignment", week, "--force", course_root=course_root)
        nbgrader("generate_solution", week, "--force", course_root=course_root)
        print(f"released {week}")


def collect(week: str, submissions: Path, course_root: Path = AUTOGRADER) -> list[str]:
    """Copy ``submissions/<student>/*.ipynb`` into nbgrader's submitted/ folder."""
    if not submissions.is_dir():
        raise SystemExit(f"course: {submissions} is not a folder of submissions")
    students = []
    for student_dir in sorted(p for p in submissions.iterdir() if p.is_dir()):
        target = course_root / "submitted" / student_dir.name / week
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(student_dir, target)
        students.append(student_dir.name)
    return students


def grade(week: str, submissions: Path, course_root: Path = AUTOGRADER) -> dict[str, float]:
    """Autograde every student of ``submissions`` one by one; return total points per student."""
    students = collect(week, submissions, course_root)
    totals: dict[str, float] = {}
    failed: dict[str, str] = {}
    for student in students:
        proc = nbgrader(
            "autograde",
            week,
            "--student",
            student,
            "--create",
            "--force",
            course_root=course_root,
            check=False,
        )
        scores = cell_scores(db_url(course_root), week, student)
        if proc.returncode != 0 or not scores:
            failed[student] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        totals[student] = sum(s.score for s in scores)
        max_total = sum(s.max_score for s in scores)
        print(f"{student}: {totals[student]:g} / {max_total:g}")
    for student, reason in failed.items():
        print(f"could not grade {student}: {reason}")
    return totals


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one instructor command."""
    parser = argparse.ArgumentParser(prog="./course")
    sub = parser.add_subparsers(dest="command", required=True)
    p_release = sub.add_parser("release", help="generate release/ and solutions/")
    p_release.add_argument("weeks", nargs="*")
    p_grade = sub.add_parser("grade", help="autograde a folder of submissions")
    p_grade.add_argument("week")
    p_grade.add_argument("submissions", type=Path)
    p_feedback = sub.add_parser("feedback", help="write feedback HTML")
    p_feedback.add_argument("week")
    p_export = sub.add_parser("export", help="export grades as CSV")
    p_export.add_argument("file", nargs="?", default="grades.csv")
    args = parser.parse_args(argv)

    if args.command == "release":
        release(args.weeks or weeks())
    elif args.command == "grade":
        grade(args.week, args.submissions.resolve())
    elif args.command == "feedback":
        nbgrader("generate_feedback", args.week, "--force", course_root=AUTOGRADER)
        print(f"feedback written to {AUTOGRADER / 'feedback'}")
    elif args.command == "export":
        target = Path(args.file).resolve()
        nbgrader("export", "--to", str(target), course_root=AUTOGRADER)
        print(f"grades written to {target}")
    return 0
