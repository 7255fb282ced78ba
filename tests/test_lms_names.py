"""The collector that reads students out of the file names an LMS gives to downloads."""

from __future__ import annotations

from datetime import datetime

import pytest
from course_admin.lms import LmsFileNameCollector
from nbgrader.utils import parse_utc

EXTRACTED = "/course/downloaded/week01_sgd/extracted"


@pytest.mark.parametrize(
    "name, student, file_id",
    [
        # Blackboard, inside the folder its bulk-download zip was extracted to
        (
            "gradebook_week01/week01_sgd_jdoe_attempt_2026-10-02-09-30-00_week01_sgd.ipynb",
            "jdoe",
            "week01_sgd.ipynb",
        ),
        (
            "Week 1_a.smith2_attempt_2026-10-02-09-30-00_my notes.ipynb",
            "a.smith2",
            "my notes.ipynb",
        ),
        # Canvas, on time, late, and with the suffix of a second upload
        ("doejane_12345_678901_week01_sgd.ipynb", "doejane", "week01_sgd"),
        ("doejane_late_12345_678901_week01_sgd.ipynb", "doejane", "week01_sgd"),
        ("smithanna_2345_78901_week01_sgd-1.ipynb", "smithanna", "week01_sgd"),
    ],
)
def test_known_lms_names(name: str, student: str, file_id: str) -> None:
    info = LmsFileNameCollector().collect(f"{EXTRACTED}/{name}")
    assert info is not None, name
    assert (info["student_id"], info["file_id"]) == (student, file_id)


@pytest.mark.parametrize(
    "stamp, when",
    [
        ("2026-10-02-09-30-00", datetime(2026, 10, 2, 9, 30, 0)),
        ("2026-10-02-14-03-22", datetime(2026, 10, 2, 14, 3, 22)),
        ("2026-10-02-14-05-00", datetime(2026, 10, 2, 14, 5, 0)),
        # dateutil reads "-23-59-59" as a time-zone offset and nbgrader then fails
        ("2026-10-02-23-59-59", datetime(2026, 10, 2, 23, 59, 59)),
    ],
)
def test_blackboard_attempt_times_read_as_nbgrader_reads_them(stamp: str, when: datetime) -> None:
    name = f"week01_sgd_jdoe_attempt_{stamp}_week01_sgd.ipynb"
    info = LmsFileNameCollector().collect(f"{EXTRACTED}/{name}")
    assert parse_utc(info["timestamp"]) == when


@pytest.mark.parametrize(
    "name",
    [
        "week01_sgd.ipynb",  # no student in the name
        "notes_for_jdoe.ipynb",
        "week01_sgd_jdoe_attempt_2026-10-02-09-30-00.txt",  # Blackboard's receipt, not a notebook
        "doejane_12345_678901_week01_sgd.py",
    ],
)
def test_other_names_are_not_collected(name: str) -> None:
    assert LmsFileNameCollector().collect(f"{EXTRACTED}/{name}") is None


def test_an_instructors_pattern_replaces_the_known_names() -> None:
    collector = LmsFileNameCollector(named_regexp=r".*/(?P<student_id>\w+)__(?P<file_id>\w+)")
    assert collector.collect(f"{EXTRACTED}/jdoe__week01_sgd.ipynb")["student_id"] == "jdoe"
    assert collector.collect(f"{EXTRACTED}/doejane_12345_678901_week01_sgd.ipynb") is None
