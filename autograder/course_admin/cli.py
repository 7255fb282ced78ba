"""``python -m course_admin COMMAND``: what ./course runs for instructors."""

from __future__ import annotations

import argparse
from pathlib import Path

from course_admin import review
from course_admin.batch import grade_class
from course_admin.cache import prepared
from course_admin.edition import write_student_edition
from course_admin.export import export_csv
from course_admin.nbgrader_cli import nbgrader
from course_admin.paths import AUTOGRADER, db_url, weeks

# Where the student edition is published; the README's Binder badge points there too.
DEFAULT_PUBLIC_REPO = "optimization-course/course"


def release(week_ids: list[str], course_root: Path = AUTOGRADER) -> None:
    """Generate release/ and solutions/ for the given weeks from source/; prepare grading."""
    for week in week_ids:
        nbgrader("generate_assignment", week, "--force", course_root=course_root)
        nbgrader("generate_solution", week, "--force", course_root=course_root)
        prepared(course_root, week)
        print(f"released {week}")


def shard(text: str) -> tuple[int, int]:
    """``"2/5"`` -> (2, 5), for ``--shard``."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes K/N, e.g. 1/4, not {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"--shard {text}: K must be between 1 and N")
    return k, n


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
    p_grade.add_argument(
        "--workers",
        type=int,
        default=None,
        help="students graded at once (default: cores, up to 4)",
    )
    p_grade.add_argument(
        "--shard",
        type=shard,
        default=(1, 1),
        metavar="K/N",
        help="grade only the K-th of N slices of the students (N machines, one gradebook)",
    )
    p_grade.add_argument(
        "--no-sandbox",
        action="store_true",
        help="grade without the bubblewrap sandbox (only where none can be made: the "
        "students' code then runs with your rights)",
    )
    p_review = sub.add_parser("review", help="look at a flagged submission; give or withhold")
    p_review.add_argument("week")
    p_review.add_argument("student")
    decision = p_review.add_mutually_exclusive_group()
    decision.add_argument("--give", action="store_true", help="count the autograder's points")
    decision.add_argument("--withhold", action="store_true", help="keep the points at 0")
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
        grade_class(
            args.week,
            args.submissions.resolve(),
            AUTOGRADER,
            workers=args.workers,
            sandboxed=not args.no_sandbox,
            shard=args.shard,
        )
    elif args.command == "review":
        if args.give or args.withhold:
            review.decide(AUTOGRADER, args.week, args.student, give=args.give)
        print(review.show(AUTOGRADER, args.week, args.student))
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
