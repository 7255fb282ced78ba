"""The typical wrong answers under tests/submissions: every file still fits the solution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from course_fixture import (
    answer_source,
    apply_diff,
    graded_cell,
    wrong_answer,
    wrong_answer_files,
)

REPO = Path(__file__).resolve().parent.parent
SUBMISSIONS = REPO / "tests" / "submissions"
FILES = [p for week in sorted(SUBMISSIONS.iterdir()) for p in wrong_answer_files(week)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_wrong_answer_is_a_changed_answer_cell(path: Path) -> None:
    (notebook,) = (REPO / "solutions" / path.parent.name).glob("*.ipynb")
    solution = json.loads(notebook.read_text())
    grade_id, expect, source = wrong_answer(path, solution)
    assert expect.strip(), f"{path.name}: say what the feedback must contain"
    answer = graded_cell(solution, grade_id)
    assert answer["metadata"]["nbgrader"].get("solution"), (
        f"{path.name}: {grade_id} is not an answer cell"
    )
    assert source != answer_source(solution, grade_id), f"{path.name}: the answer is unchanged"


def test_a_hunk_replaces_the_lines_it_names() -> None:
    source = "a = 1\nb = 2\nc = 3"
    diff = "# grade_id: x\n@@ -1,3 +1,3 @@\n a = 1\n-b = 2\n+b = 20\n c = 3\n"
    assert apply_diff(source, diff, "x.diff") == "a = 1\nb = 20\nc = 3"


def test_a_stale_hunk_is_named() -> None:
    with pytest.raises(ValueError, match="x.diff: the hunk starting 'a = 1' matches"):
        apply_diff("a = 1\nb = 3", "@@\n a = 1\n-b = 2\n+b = 20\n", "x.diff")
