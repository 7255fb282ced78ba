"""``python -m course_admin COMMAND``: what ./course runs for instructors."""

from __future__ import annotations

import argparse
from pathlib import Path

from course_admin.batch import grade_class
from course_admin.edition import write_student_edition
from course_admin.export import export_csv
from course_admin.nbgrader_cli import nbgrader
from course_admin.paths import AUTOGRADER, db_url, weeks

# Where the student edition is published; the README's Binder badge points there too.
DEFAULT_PUBLIC_REPO = "optimization-course/course"


def release(week_ids: list[str], course_root: Path = AUTOGRADER) -> None:
    """Generate release/ and solutions/ for the given weeks from source/."""
    for week in week_ids:
        nbgrader("generate_assignment", week, "--force", course_root=course_root)
        nbgrader("generate_solution", week, "--force", course_root=course_root)
        print(f"released {week}")


def grade(week: str, submissions: Path, course_root: Path = AUTOGRADER) -> dict[str, float]:
    """Autograde every student of ``submissions``; total points per student."""
    results = grade_class(week, submissions, course_root)
    return {r.student: r.total for r in results}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one instructor command."""
    parser = argparse.ArgumentParser(prog="./course")
    sub = parser.add_subparsers(dest="command", required=True)
    p_release = sub.add_parser("release", help="generate release/ and solutions/")
    p_release.add_argument("weeks", nargs="*")
    p_grade = sub.add_parser("grade", help="autograde a class's submissions")
    p_grade.add_argument("week")
    p_grade.add_argument(
        "submissions",
        type=Path,
        nargs="?",
        default=AUTOGRADER / "downloaded",
        help="folder or zip of <student>/ folders, or nbgrader's downloaded/ folder holding "
        "<week>/archive/ with the LMS's files (the default: autograder/downloaded)",
    )
    p_feedback = sub.add_parser("feedback", help="write feedback HTML")
    p_feedback.add_argument("week")
    p_export = sub.add_parser("export", help="export grades as CSV")
    p_export.add_argument("file", nargs="?", default="grades.csv")
    p_edition = sub.add_parser("student-edition", help="write the public student tree")
    p_edition.add_argument("target", type=Path)
    p_edition.add_argument(
        "--repo", default=DEFAULT_PUBLIC_REPO, help="GitHub OWNER/NAME of the public repository"
    )
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
        count = export_csv(db_url(), AUTOGRADER / "reports", target)
        print(f"{count} graded submission(s) written to {target}")
    elif args.command == "student-edition":
        files = write_student_edition(args.target.resolve(), args.repo)
        print(f"student edition: {len(files)} files in {args.target}")
    return 0
