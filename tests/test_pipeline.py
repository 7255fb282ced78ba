"""The nbgrader pipeline, for real: release, autograde, scores read from the gradebook."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from conftest import CORRECT_ANSWERS, SUBMISSIONS, answer_variants
from course_admin.paths import weeks
from course_fixture import CourseCopy
from course_grading.core.checks import demonstrations

REPO = Path(__file__).resolve().parent.parent
WEEKS = weeks(REPO / "source")
SECRET_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "course_grading")


def _cells(nb: dict) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


@pytest.mark.parametrize("folder", ["release", "solutions"])
@pytest.mark.parametrize("week", WEEKS)
def test_committed_notebooks_are_what_generation_gives(
    released_course: CourseCopy, folder: str, week: str
) -> None:
    generated = released_course.notebook(folder, week)
    (path,) = (REPO / folder / week).glob("*.ipynb")
    committed = json.loads(path.read_text())
    assert committed == generated, f"{folder}/{week} is stale: run ./course release {week}"
    extra = {p.name for p in (REPO / folder / week).iterdir()}
    assert extra == {p.name for p in (released_course.root / folder / week).iterdir()}


@pytest.mark.parametrize("folder", ["release", "solutions"])
def test_no_solution_markers_or_hidden_tests_are_published(folder: str) -> None:
    for path in (REPO / folder).rglob("*"):
        if path.is_file():
            text = path.read_text()
            for marker in SECRET_MARKERS:
                assert marker not in text, f"{path.relative_to(REPO)} contains {marker!r}"


@pytest.mark.parametrize("week", WEEKS)
def test_release_holds_no_solution_code(week: str) -> None:
    """No telling line of a solution reaches the release, unless the source gives it openly
    (Week 8 spells out torch's calls in its prose and gives a whole Adafactor class)."""
    (source,) = (REPO / "source" / week).glob("*.ipynb")
    (release,) = (REPO / "release" / week).glob("*.ipynb")
    released = "\n".join(src for _, src in _cells(json.loads(release.read_text())))
    solution = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
    sources = [src for _, src in _cells(json.loads(source.read_text()))]
    given = "\n".join(solution.sub("", src) for src in sources)
    for src in sources:
        for block in solution.findall(src):
            for line in block.strip().splitlines():
                line = line.strip()
                if len(line) > 25 and line not in given:  # shorter lines are too generic
                    assert line not in released, f"solution line leaked: {line}"


@pytest.mark.parametrize("week", WEEKS)
def test_solution_autogrades_to_full_marks(
    released_course: CourseCopy, reference_grades: dict, week: str
) -> None:
    scores = released_course.scores(week, "solution")
    assert scores, "the solution was not graded"
    lost = {gid: s for gid, s in scores.items() if s[0] != s[1]}
    assert not lost, f"the solution loses points: {lost}\n" + released_course.graded_outputs(
        week, "solution"
    )


@pytest.mark.parametrize("week", [w for w in WEEKS if demonstrations(w)])
def test_the_demonstrations_are_not_run_and_say_so(
    released_course: CourseCopy, reference_grades: dict, week: str
) -> None:
    """Grading skips the demonstration cells the week lists; the feedback says why."""
    assert reference_grades[week]["solution"].status == "graded"
    (path,) = (released_course.autograder / "autograded" / "solution" / week).glob("*.ipynb")
    cells = {c.get("id"): c for c in json.loads(path.read_text())["cells"]}
    for cell_id in demonstrations(week):
        (output,) = cells[cell_id]["outputs"]
        assert "".join(output["text"]).startswith("Not run while grading"), output
    ran = [c for c in cells.values() if c["cell_type"] == "code" and c["outputs"]]
    assert len(ran) > len(demonstrations(week)), "the other cells should have run"


@pytest.mark.parametrize("week", ["week05_recipe"])
def test_grading_leaves_no_experiment_logs_in_the_temp_folder(
    reference_grades: dict, session_started: float, week: str
) -> None:
    """Week 5 logs its sweep; while grading, the logs go to the scratch course, removed after."""
    assert reference_grades[week]["solution"].status == "graded"
    left = [
        p for p in Path(tempfile.gettempdir(), "optlab-runs").glob("week05-*")
        if p.stat().st_mtime >= session_started
    ]  # fmt: skip
    assert not left, f"grading left experiment logs behind: {left}"


@pytest.mark.parametrize("week", WEEKS)
def test_blank_release_scores_zero_on_every_test_cell(
    released_course: CourseCopy, reference_grades: dict, week: str
) -> None:
    scores = released_course.scores(week, "blank")
    assert scores, "the blank release was not graded"
    earned = {gid: s for gid, s in scores.items() if s[0] != 0}
    assert not earned, f"the blank release earns points: {earned}"


@pytest.mark.parametrize("week", [w for w in WEEKS if (SUBMISSIONS / w).is_dir()])
def test_typical_wrong_implementations_lose_points_and_are_named(
    released_course: CourseCopy, reference_grades: dict, week: str
) -> None:
    solution = released_course.notebook("solutions", week)
    wrong = answer_variants(SUBMISSIONS / week, solution)
    assert len(wrong) >= 5
    full = sum(s[1] for s in released_course.scores(week, "solution").values())
    totals = reference_grades[week]  # graded in the week's batch, with the solution
    for name, (_, expect, _) in wrong.items():
        assert totals[name].total < full, f"{name} keeps full marks"
        outputs = released_course.graded_outputs(week, name)
        assert expect in outputs, f"{name}: the feedback should say {expect!r}:\n{outputs}"
        assert "course_grading/" not in outputs, f"{name}: the grading code shows in feedback"


@pytest.mark.parametrize("week", [w for w in WEEKS if (CORRECT_ANSWERS / w).is_dir()])
def test_correct_alternatives_get_full_marks(
    released_course: CourseCopy, reference_grades: dict, week: str
) -> None:
    """Correct answers written otherwise than the solution (e.g. rounded differently) keep
    every point: tests/correct_answers/WEEK holds them, each with ``# expect: full marks``."""
    solution = released_course.notebook("solutions", week)
    correct = answer_variants(CORRECT_ANSWERS / week, solution)
    assert correct
    assert all(expect == "full marks" for _, expect, _ in correct.values())
    # graded in the week's batch, with the solution (the reference_grades fixture)
    full = released_course.scores(week, "solution")
    for name in correct:
        scores = released_course.scores(week, name)
        assert scores.keys() == full.keys(), f"{name} was not graded"
        lost = {gid: s for gid, s in scores.items() if s[0] != s[1]}
        assert not lost, f"{name} loses points: {lost}\n" + released_course.graded_outputs(
            week, name
        )
