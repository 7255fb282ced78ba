"""Shared fixtures: a throw-away copy of the course that tests release and grade for real."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # widget tests draw off-screen

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "autograder"))  # course_admin and course_grading
os.environ.setdefault("OMP_NUM_THREADS", "1")

from course_admin.results import StudentResult  # noqa: E402
from course_fixture import (  # noqa: E402
    CORRECT_ANSWERS,
    SUBMISSIONS,
    CourseCopy,
    answer_variants,
    replace_answer,
)
from postgres_server import PostgresServer  # noqa: E402

_STARTED = time.time()


@pytest.fixture(scope="session")
def session_started() -> float:
    """When this test session started (before anything was graded)."""
    return _STARTED


@pytest.fixture(scope="session")
def released_course(tmp_path_factory: pytest.TempPathFactory) -> CourseCopy:
    """A copy of the course in a temporary folder, with every week released from source/."""
    course = CourseCopy.create(REPO, tmp_path_factory.mktemp("course"))
    course.release()
    return course


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for this session (skips, saying why, where none starts)."""
    server = PostgresServer()
    why = server.start()
    if why is not None:
        server.stop()
        pytest.skip(f"no PostgreSQL server for the gradebook tests: {why}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_course(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> CourseCopy:
    """A copy of the course whose gradebook is a PostgreSQL database, Week 1 released."""
    course = CourseCopy.create(REPO, tmp_path_factory.mktemp("pgcourse"), postgres.url())
    course.release(["week01_sgd"])
    return course


_GRADED: dict[str, dict[str, StudentResult]] = {}


@pytest.fixture
def reference_grades(released_course: CourseCopy, week: str) -> dict[str, dict[str, StudentResult]]:
    """Each week graded once per session, as one batch: the solution ("solution"), the blank
    release ("blank"), every typical wrong answer of tests/submissions/WEEK and every correct
    alternative of tests/correct_answers/WEEK (each named after its file); {week: {student: ...}}.

    Tests using it are parametrized by ``week``; each week is graded the first time it is asked
    for, so ``-k week01_sgd`` grades only Week 1.
    """
    if week not in _GRADED:
        solution = released_course.notebook("solutions", week)
        class_ = {"solution": solution, "blank": released_course.notebook("release", week)}
        for folder in (SUBMISSIONS / week, CORRECT_ANSWERS / week):
            for name, (grade_id, _, source) in answer_variants(folder, solution).items():
                assert name not in class_, f"{folder / name}: two answers of {week} share a name"
                class_[name] = replace_answer(solution, grade_id, source)
        _GRADED[week] = released_course.grade(week, class_)
    return _GRADED
