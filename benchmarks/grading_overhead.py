"""What grading costs beyond running the notebook, per week, measured in one run.

    python benchmarks/grading_overhead.py [--weeks week01_sgd ...] [--class-size 8]
                                          [--course OTHER_CHECKOUT]

For each week, on a fresh temporary copy of the course (released first, not timed):

(a) the week's solution notebook executed once with nbclient, on one pinned core, every cell;
(b) ``./course grade`` of that one solution (``python -m course_admin grade``, one worker),
    on the same pinned core, from the command's start to its end (grading leaves out the
    demonstration cells the week lists in ``DEMONSTRATIONS``);
(c) ``./course grade`` of a class of N copies of the solution with the default workers.

It prints (b)/(a), the time per student in (c), and where (b)'s time went: the sandboxed run
(kernel start, the notebook's cells, the test cells and the hidden checks' own share, kernel
shutdown), the rest of nbgrader's work on the student, and the command's own start and end
(imports, the cached grading kit, the gradebook). ``--course`` grades with another checkout of
the course (an older version, to compare); (a) always runs this checkout's solutions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from notebook_limits import measure  # noqa: E402

STATE = ("gradebook.db*", "submitted", "autograded", "feedback", "reports", "cache", "__pycache__")


def copy_course(
    checkout: Path, target: Path, weeks: list[str], env: dict[str, str] | None = None
) -> Path:
    """A fresh copy of ``checkout``'s sources and grading code in ``target``, released
    (into the gradebook ``env``'s COURSE_DB_URL names, if it names one)."""
    for name in ("source", "autograder", "solutions"):
        shutil.copytree(checkout / name, target / name, ignore=shutil.ignore_patterns(*STATE))
    autograder = target / "autograder"
    env = dict(os.environ, **(env or {}), PYTHONPATH=str(autograder))
    command = [sys.executable, "-m", "course_admin", "release", *weeks]
    subprocess.run(command, env=env, cwd=target, check=True, capture_output=True)
    return autograder


def class_of(autograder: Path, week: str, size: int, name: str) -> Path:
    """A folder of ``size`` students, each handing in the week's solution."""
    incoming = autograder.parent / "incoming" / name
    solution = next((autograder.parent / "solutions" / week).glob("*.ipynb"))
    for i in range(size):
        (incoming / f"student{i:03d}").mkdir(parents=True)
        shutil.copy2(solution, incoming / f"student{i:03d}" / solution.name)
    return incoming


def grade_command(
    autograder: Path, week: str, incoming: Path, options: list[str], env: dict[str, str] | None
) -> tuple[list[str], dict[str, str]]:
    """``python -m course_admin grade`` (what ``./course grade`` runs) and its environment."""
    command = [sys.executable, "-m", "course_admin", "grade", week, str(incoming), *options]
    return command, dict(os.environ, **(env or {}), PYTHONPATH=str(autograder), OMP_NUM_THREADS="1")


def check(proc: subprocess.CompletedProcess, week: str) -> None:
    """Fail loudly unless every student was graded."""
    if proc.returncode != 0 or "need attention" in proc.stdout:
        raise RuntimeError(f"grading {week} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def grade(autograder: Path, week: str, size: int, workers: int | None, pinned: bool) -> float:
    """Seconds for ``python -m course_admin grade`` of ``size`` copies of the solution."""
    incoming = class_of(autograder, week, size, f"{week}-{size}")
    options = ["--workers", str(workers)] if workers else []
    command, env = grade_command(autograder, week, incoming, options, None)
    one_core = {min(os.sched_getaffinity(0))}
    start = time.perf_counter()
    proc = subprocess.run(
        command, env=env, cwd=autograder.parent, capture_output=True, text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, one_core)) if pinned else None,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    check(proc, week)
    return elapsed


def breakdown(autograder: Path, week: str, whole: float) -> dict[str, float] | None:
    """Where one graded student's time went, from the batch's report (if it says)."""
    reports = sorted((autograder / "reports" / week).glob("*.json"))
    t = json.loads(reports[0].read_text()).get("timings") if reports else None
    if not t:
        return None
    sandbox = t.get("sandbox") or 0.0
    inside = sum(t.get(k, 0.0) for k in ("kernel start", "answer cells", "other cells"))
    inside += t.get("test cells", 0.0) + t.get("kernel shutdown", 0.0)
    return {
        "kernel start": t.get("kernel start", 0.0),
        "notebook cells": t.get("answer cells", 0.0) + t.get("other cells", 0.0),
        "test cells": t.get("test cells", 0.0),
        "  of which hidden checks": t.get("hidden checks", 0.0),
        "kernel shutdown": t.get("kernel shutdown", 0.0),
        "sandbox and runner start": max(0.0, sandbox - inside),
        "nbgrader on the student": t["whole grading"] - sandbox,
        "command start and end": whole - t["whole grading"],
    }


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = sorted(p.name for p in (REPO / "source").iterdir() if p.name.startswith("week"))
    parser.add_argument("--weeks", nargs="*", default=default)
    parser.add_argument("--class-size", type=int, default=8)
    parser.add_argument("--course", type=Path, default=REPO)
    args = parser.parse_args()
    rows, details = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        autograder = copy_course(args.course.resolve(), Path(tmp), args.weeks)
        for week in args.weeks:
            notebook = measure(next((REPO / "solutions" / week).glob("*.ipynb")))["wall_s"]
            single = grade(autograder, week, 1, None, pinned=True)
            if (found := breakdown(autograder, week, single)) is not None:
                details[week] = found
            size = args.class_size
            whole_class = grade(autograder, week, size, None, pinned=False) if size else 0.0
            rows.append((week, notebook, single, whole_class / size if size else 0.0))
    print(f"\n{'week':24} {'(a) run s':>9} {'(b) grade s':>11} {'(b)/(a)':>8} "
          f"{'(c) s/student':>13}")  # fmt: skip
    for week, a, b, c in rows:
        print(f"{week:24} {a:9.1f} {b:11.1f} {b / a:8.2f} {c:13.1f}")
    if not details:
        return
    print("\nwhere (b)'s time went, seconds:")
    names = list(next(iter(details.values())))
    print(f"{'':26}" + "".join(f"{w[:8]:>9}" for w in details))
    for name in names:
        print(f"{name:26}" + "".join(f"{details[w][name]:9.2f}" for w in details))


if __name__ == "__main__":
    main()
