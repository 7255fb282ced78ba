"""One class graded by two machines at once into one PostgreSQL gradebook (``--shard K/N``).

Two ``./course grade WEEK SUBMISSIONS --shard K/2`` processes run side by side against one
server; the gradebook must hold what grading the class in one go gives, and the CSV export
must list every student once.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from course_admin.batch import shard_of
from course_admin.export import export_csv
from course_admin.gradebook import snapshot
from course_fixture import CourseCopy, graded_cell
from postgres_server import PostgresServer

REPO = Path(__file__).resolve().parent.parent
WEEK = "week01_sgd"


def _class(course: CourseCopy, folder: Path) -> list[str]:
    """Six students: right, blank and half-right notebooks."""
    solution = course.notebook("solutions", WEEK)
    blank = course.notebook("release", WEEK)
    half = json.loads(json.dumps(solution))
    graded_cell(half, "sgd_step")["source"] = graded_cell(blank, "sgd_step")["source"]
    notebooks = {"ann": solution, "bob": blank, "cem": half, "dia": solution, "eli": half}
    notebooks["fay"] = blank
    for student, nb in notebooks.items():
        (folder / student).mkdir(parents=True)
        (folder / student / f"{WEEK}.ipynb").write_text(json.dumps(nb))
    return sorted(notebooks)


def _grade(course: CourseCopy, url: str, folder: Path, *options: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(course.autograder), COURSE_DB_URL=url)
    command = ["grade", WEEK, str(folder), *options]
    return subprocess.Popen(
        [sys.executable, "-m", "course_admin", *command],
        cwd=course.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_two_shards_at_once_grade_like_one_batch(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    course = CourseCopy.create(REPO, tmp_path_factory.mktemp("shards"), postgres.url())
    course.release([WEEK])
    folder = course.root / "incoming"
    students = _class(course, folder)
    assert {shard_of(s, 2) for s in students} == {1, 2}, "both shards get students"

    # One worker each, as two 1-core machines would; the class in one go takes the defaults.
    shards = [
        _grade(course, course.db_url, folder, "--workers", "1", "--shard", f"{k}/2") for k in (1, 2)
    ]
    outputs = [p.communicate(timeout=1200)[0] for p in shards]
    assert all(p.returncode == 0 for p in shards), outputs

    one_go = CourseCopy(course.root, postgres.url())
    one_go.release([WEEK])
    single = _grade(one_go, one_go.db_url, folder)
    assert single.wait(timeout=1200) == 0, single.stdout.read()

    def grades(url: str) -> dict:
        return {k: v["grades"] for k, v in snapshot(url).items()}

    assert grades(course.db_url) == grades(one_go.db_url)
    assert {k[0] for k in grades(course.db_url)} == set(students)
    target = tmp_path_factory.mktemp("csv") / "grades.csv"
    with course.gradebook() as url:
        export_csv(url, course.autograder / "reports", target)
    rows = [r["student"] for r in csv.DictReader(target.open())]
    assert sorted(rows) == students
