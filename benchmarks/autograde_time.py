"""Time autograding: one full submission of each week, and a class of N for one week.

    python benchmarks/autograde_time.py [--weeks week01_sgd ...] [--class-size 30]
                                        [--class-week week01_sgd] [--workers 2]

Works on a temporary copy of the course (the real gradebook is not touched). Every submission
is the week's solution, so every notebook runs to the end, as a full submission does.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "autograder"))

from course_admin.batch import grade_class  # noqa: E402
from course_admin.cli import release  # noqa: E402
from course_admin.paths import weeks  # noqa: E402


def time_class(course: Path, week: str, size: int, workers: int) -> float:
    """Seconds to grade ``size`` copies of ``week``'s solution."""
    incoming = course / "incoming" / f"{week}-{size}"
    (solution,) = (course / "solutions" / week).glob("*.ipynb")
    for i in range(size):
        (incoming / f"student{i:03d}").mkdir(parents=True)
        shutil.copy2(solution, incoming / f"student{i:03d}" / solution.name)
    start = time.perf_counter()
    results = grade_class(week, incoming, course / "autograder", workers=workers)
    elapsed = time.perf_counter() - start
    assert all(r.status == "graded" for r in results), [r for r in results if r.status != "graded"]
    return elapsed


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", nargs="*", default=weeks())
    parser.add_argument("--class-size", type=int, default=30)
    parser.add_argument("--class-week", default="week01_sgd")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        for name in ("source", "autograder"):
            shutil.copytree(
                REPO / name,
                course / name,
                ignore=shutil.ignore_patterns("gradebook.db*", "submitted", "autograded",
                                              "feedback", "reports", "__pycache__"),
            )  # fmt: skip
        release(sorted(set(args.weeks) | {args.class_week}), course_root=course / "autograder")
        rows = [(week, 1, time_class(course, week, 1, 1)) for week in args.weeks]
        if args.class_size:
            size = args.class_size
            rows.append((args.class_week, size, time_class(course, args.class_week, size,
                                                           args.workers)))  # fmt: skip
    print(f"\n{'week':26} {'submissions':>11} {'seconds':>9} {'s/submission':>13}")
    for week, n, seconds in rows:
        print(f"{week:26} {n:11d} {seconds:9.1f} {seconds / n:13.1f}")


if __name__ == "__main__":
    main()
