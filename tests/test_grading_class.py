"""Grading a class: broken and hostile submissions, the gradebook, the CSV, the student edition.

The hostile batch, re-grading, the CSV and the feedback run twice: with the default SQLite
gradebook and with a PostgreSQL one (a throwaway server), and must come out the same.
"""

from __future__ import annotations

import copy
import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from course_admin.edition import write_student_edition
from course_admin.export import export_csv
from course_admin.gradebook import snapshot
from course_admin.integrity import scan_source
from course_admin.paths import db_url
from course_fixture import CourseCopy
from nbgrader.api import Gradebook
from torch.utils._pytree import tree_map

REPO = Path(__file__).resolve().parent.parent
WEEK = "week01_sgd"
FULL = 9.0


def _with(nb: dict, grade_id: str, append: str = "", replace: str | None = None) -> dict:
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
            source = "".join(cell["source"])
            cell["source"] = replace if replace is not None else source + "\n" + append
            return nb
    raise KeyError(grade_id)


def _without(nb: dict, grade_id: str) -> dict:
    nb = copy.deepcopy(nb)
    nb["cells"] = [
        c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") != grade_id
    ]
    return nb


def _duplicated(nb: dict, grade_id: str) -> dict:
    nb = copy.deepcopy(nb)
    ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in nb["cells"]]
    i = ids.index(grade_id)
    nb["cells"].insert(i, copy.deepcopy(nb["cells"][i]))
    return nb


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def course(request: pytest.FixtureRequest) -> CourseCopy:
    """The released course, with its gradebook in SQLite or in PostgreSQL."""
    fixture = "released_course" if request.param == "sqlite" else "postgres_course"
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="module")
def hostile_class(course: CourseCopy, tmp_path_factory, monkeypatch_module) -> dict:
    """An honest student graded first, then a batch of broken and hostile submissions."""
    monkeypatch_module.setenv("COURSE_CELL_TIMEOUT_S", "25")
    solution = course.notebook("solutions", WEEK)
    course.grade(WEEK, {"honest": solution})
    with course.gradebook() as url:
        before = snapshot(url)

    folder = tmp_path_factory.mktemp("incoming")
    notebooks = {
        "infinite_loop": _with(solution, "max_stable_lr", "while True:\n    pass"),
        "memory_hog": _with(
            solution, "minibatches", "hog = []\nwhile True:\n    hog.append(torch.ones(2**26))"
        ),
        "sys_exit": _with(solution, "max_stable_lr", "import sys\nsys.exit(0)"),
        "os_exit": _with(solution, "minibatches", "import os\nos._exit(1)"),
        # IPython sends this error with a traceback of None, which no notebook can hold.
        "malformed_output": _with(
            solution,
            "max_stable_lr",
            "class Odd(Exception):\n    def _render_traceback_(self):\n        return None\n\n"
            "raise Odd()",
        ),
        "deleted_test": _without(solution, "sgd_step_test_basic"),
        "edited_test": _with(solution, "sgd_step_test_basic", replace="pass"),
        "duplicated": _duplicated(solution, "sgd_step"),
        "patches_checks": _with(
            solution,
            "sgd_step",
            replace="try:\n    import course_grading.week01.checks as w\n"
            "    w.checks = lambda: {}\nexcept ImportError:\n    pass\n"
            "class SGD(Optimizer):\n    pass\n",
        ),
        "hides_errors": _with(
            solution,
            "sgd_step",
            replace="class SGD(Optimizer):\n    pass\n"
            "get_ipython().set_custom_exc((Exception,), lambda *a, **k: None)\n",
        ),
        "patches_torch": _with(
            solution, "sgd_step", "torch.optim.SGD.step = lambda self, closure=None: None"
        ),
        "reads_checks": _with(
            solution,
            "max_stable_lr",
            "import os\nsecret = open(os.environ['PYTHONPATH'].split(':')[0]"
            " + '/course_grading/week01.py').read()",
        ),
        "writes_gradebook": _with(
            solution, "max_stable_lr", "open('../../../gradebook.db', 'w').write('garbage')"
        ),
        "writes_other_students": _with(
            solution,
            "max_stable_lr",
            "import pathlib\nfor p in pathlib.Path('../..').glob('*/*/*.ipynb'):\n"
            "    p.write_text('{}')",
        ),
    }
    for student, nb in notebooks.items():
        (folder / student).mkdir()
        (folder / student / f"{WEEK}.ipynb").write_text(json.dumps(nb))
    (folder / "renamed").mkdir()
    (folder / "renamed" / "my_work.ipynb").write_text(json.dumps(solution))
    (folder / "invalid_json").mkdir()
    (folder / "invalid_json" / f"{WEEK}.ipynb").write_text("{not json")
    (folder / "empty").mkdir()

    from course_admin.batch import grade_class

    with course.gradebook():
        results = {r.student: r for r in grade_class(WEEK, folder, course.autograder, workers=2)}
    return {"course": course, "results": results, "before": before}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


EXPECTED = {
    # student: (status, full points? (None: either), phrase in the reason)
    "infinite_loop": ("graded", True, "stopped at the time limit"),
    "memory_hog": ("graded", None, "ran out of memory"),
    "sys_exit": ("graded", True, ""),
    "os_exit": ("not graded", False, "kernel died"),
    "malformed_output": ("graded", True, ""),
    "deleted_test": ("graded", False, "deleted from the notebook score 0: sgd_step_test_basic"),
    "edited_test": ("graded", True, ""),
    "duplicated": ("graded", True, "graded the last copy"),
    "patches_checks": ("flagged", False, "names the grading code"),
    "hides_errors": ("flagged", False, "changes error reporting"),
    "patches_torch": ("flagged", False, "replaces parts of torch.optim"),
    "reads_checks": ("flagged", False, "names the grading code"),
    "writes_gradebook": ("flagged", False, "refers to the gradebook"),
    "writes_other_students": ("flagged", False, "reaches into other folders"),
    "renamed": ("graded", True, "graded as week01_sgd.ipynb"),
    "invalid_json": ("not graded", False, "not a valid notebook"),
    "empty": ("not graded", False, "no notebook"),
}


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_every_submission_gets_a_score_and_a_reason(hostile_class: dict, student: str) -> None:
    status, full, phrase = EXPECTED[student]
    result = hostile_class["results"][student]
    assert result.status.value == status, result
    assert phrase in result.reason, result.reason
    scores = hostile_class["course"].scores(WEEK, student)
    total = sum(s for s, _ in scores.values())
    assert sum(m for _, m in scores.values()) == FULL, "every student is in the gradebook"
    if full is not None:
        assert (total == FULL) is full, f"{student}: {total}"


def test_an_output_no_notebook_can_hold_is_left_out_with_a_note(hostile_class: dict) -> None:
    outputs = hostile_class["course"].graded_outputs(WEEK, "malformed_output")
    assert "an output that a notebook cannot hold" in outputs, outputs


def test_the_batch_leaves_other_grades_alone(hostile_class: dict) -> None:
    with hostile_class["course"].gradebook() as url:
        after = snapshot(url)
    honest = hostile_class["before"][("honest", WEEK)]
    assert honest["grades"] and after[("honest", WEEK)] == honest


def test_regrading_gives_the_same_grades(course: CourseCopy) -> None:
    solution = course.notebook("solutions", WEEK)
    wrong = _with(solution, "sgd_step", "SGD.step = lambda self, closure=None: None")
    runs = [course.grade(WEEK, {"again_right": solution, "again_wrong": wrong}) for _ in range(2)]
    first, second = ({k: r.scores for k, r in run.items()} for run in runs)
    assert first == second
    assert runs[0]["again_right"].total == FULL
    assert runs[0]["again_wrong"].total < FULL


def test_the_verdicts_use_the_cached_expected_values(released_course: CourseCopy) -> None:
    """The references run once, at release; every batch judges with what they saved beside
    the kit (never in it: the sandbox mounts the kit). Doctored values cost the solution its
    points, which is why that folder is the grader's alone."""
    (folder,) = (released_course.autograder / "cache").glob(f"{WEEK}-*")
    assert (folder / "expected.pt").is_file()
    assert not [p for p in (folder / "kit").rglob("*") if p.name.startswith("expected")]
    saved = (folder / "expected.pt").read_bytes()
    values = torch.load(folder / "expected.pt", weights_only=False)
    doctored = tree_map(lambda v: v * 2 if isinstance(v, torch.Tensor) else v, values)
    torch.save(doctored, folder / "expected.pt")
    try:
        solution = released_course.notebook("solutions", WEEK)
        result = released_course.grade(WEEK, {"doctored_cache": solution})["doctored_cache"]
    finally:
        (folder / "expected.pt").write_bytes(saved)
    assert result.status == "graded" and result.total < FULL


def test_csv_has_per_exercise_points_and_reasons(hostile_class: dict, tmp_path: Path) -> None:
    course = hostile_class["course"]
    target = tmp_path / "grades.csv"
    with course.gradebook() as url:
        export_csv(url, course.autograder / "reports", target)
    rows = {r["student"]: r for r in csv.DictReader(target.open())}
    assert rows["honest"][f"{WEEK}:sgd_step"] == "5.0"
    assert float(rows["honest"]["total"]) == FULL
    assert rows["empty"]["status"] == "not graded" and "no notebook" in rows["empty"]["reason"]
    assert rows["hides_errors"]["status"] == "flagged"


@pytest.mark.parametrize(
    "source, flagged",
    [
        ("import course_grading", True),
        ("torch.optim.SGD = MySGD", True),
        ("setattr(torch.optim.SGD, 'step', f)", True),
        ("if torch.optim.SGD == x: pass", False),
        ("p.add_(d, alpha=-lr)", False),
        ("opt = torch.optim.SGD(params, lr=0.1)", False),
    ],
)
def test_integrity_scan(source: str, flagged: bool) -> None:
    assert bool(scan_source(source)) is flagged


def test_student_edition_holds_nothing_secret(tmp_path: Path) -> None:
    target = tmp_path / "edition"
    files = write_student_edition(target, "someone/course")
    names = {p.relative_to(target).parts[0] for p in files}
    assert {"release", "optlab", "binder", "README.md"} <= names
    assert not names & {"source", "solutions", "autograder", "tests", "course"}
    for path in files:
        text = path.read_text(errors="replace")
        for secret in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "course_grading", "check_sgd"):
            assert secret not in text, f"{path.relative_to(target)} contains {secret!r}"
    readme = (target / "README.md").read_text()
    assert re.search(
        r"mybinder\.org/v2/gh/someone/course/HEAD\?urlpath=lab/tree/release/week01_sgd/"
        r"week01_sgd\.ipynb",
        readme,
    )


def test_lms_downloads_are_collected_and_graded(
    released_course: CourseCopy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """nbgrader's zip layout: a Blackboard bulk zip, a loose Canvas file, a file naming nobody,
    and a student's upload that would unpack to far more than it weighs."""
    from course_admin import archives
    from course_admin.batch import grade_class

    monkeypatch.setattr(archives, "MAX_UNPACKED_MB", 5)

    solution = json.dumps(released_course.notebook("solutions", WEEK))
    blank = json.dumps(released_course.notebook("release", WEEK))
    archive = tmp_path / "downloaded" / WEEK / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / f"gradebook_{WEEK}.zip", "w") as bulk:
        # Two attempts: the later one, the solution, is the one to grade. (Read as nbgrader reads
        # Blackboard's times, 14-03-22 would come after 14-05-00.)
        bulk.writestr(f"{WEEK}_jdoe_attempt_2026-10-02-14-03-22_{WEEK}.ipynb", blank)
        bulk.writestr(f"{WEEK}_jdoe_attempt_2026-10-02-14-05-00_{WEEK}.ipynb", solution)
        bulk.writestr(f"{WEEK}_jdoe_attempt_2026-10-02-14-05-00.txt", "receipt")
    (archive / f"doejane_late_12345_678901_{WEEK}-1.ipynb").write_text(solution)
    (archive / "notes.ipynb").write_text(blank)
    with zipfile.ZipFile(archive / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr(f"{WEEK}_mallory_attempt_2026-10-02-10-00-00_{WEEK}.ipynb", bytes(6 * 2**20))
    downloaded = sorted(p.name for p in archive.iterdir())

    graded = grade_class(WEEK, tmp_path / "downloaded", released_course.autograder)
    results = {r.student: r for r in graded}

    assert set(results) == {"jdoe", "doejane"}
    assert all(r.status == "graded" and r.total == FULL for r in results.values()), results
    for student in results:
        assert sum(s for s, _ in released_course.scores(WEEK, student).values()) == FULL
    summary = capsys.readouterr().out
    assert "2 downloaded file(s) skipped" in summary
    assert "notes.ipynb: no student found in the name" in summary
    assert "bomb.zip: not unpacked: unpacks to more than 5 MB" in summary
    assert sorted(p.name for p in archive.iterdir()) == downloaded, (
        "the downloads stay as they were"
    )

    # The attempt's time reaches the gradebook and, with a due date, the CSV's lateness.
    with Gradebook(db_url(released_course.autograder)) as gb:
        gb.update_or_create_assignment(WEEK, duedate="2026-10-02 12:00:00")
    target = tmp_path / "grades.csv"
    export_csv(db_url(released_course.autograder), released_course.autograder / "reports", target)
    rows = {r["student"]: r for r in csv.DictReader(target.open())}
    assert rows["jdoe"]["submitted"] == "2026-10-02 14:05:00"
    assert float(rows["jdoe"]["hours_late"]) == 2.08
    assert rows["doejane"]["submitted"] == rows["doejane"]["hours_late"] == ""
    assert rows["doejane"]["reason"] == "Canvas marked it late"
    assert rows["jdoe"]["reason"] == ""


def test_feedback_shows_the_hidden_checks_verdicts(hostile_class: dict) -> None:
    from course_admin.nbgrader_cli import nbgrader

    course = hostile_class["course"]
    with course.gradebook():
        nbgrader("generate_feedback", WEEK, "--force", course_root=course.autograder)
    feedback = course.autograder / "feedback"
    page = (feedback / "patches_checks" / WEEK / f"{WEEK}.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", "", page))  # code is highlighted span by span
    # The hidden check's verdict, decided outside the sandbox (the patch never reached it),
    # without a traceback into the grading code's files.
    assert "CheckFailed: SGD's constructor should take `lr`" in text
    assert "course_grading/" not in text and "checks.py" not in text
    assert (feedback / "honest" / WEEK / f"{WEEK}.html").exists()


# Gives every grade in the gradebook at {url} 99 points: what a notebook graded without a
# sandbox can do once it knows where the gradebook is (its path is in the grader's command
# line, its URL in the grader's memory). Printed in pieces, so that the source quoted in a
# traceback cannot pass for the output.
_CHANGE_EVERY_GRADE = """
from sqlalchemy import create_engine, text
with create_engine("{url}").begin() as _db:
    _db.execute(text("UPDATE grade SET manual_score = 99"))
print("changed", "every", "grade")
"""


def test_the_gradebook_outside_the_batch_is_restored(course: CourseCopy, capsys) -> None:
    """Graded without a sandbox, a notebook changes everyone's grades; the batch puts them back."""
    from course_admin.batch import grade_class

    solution = course.notebook("solutions", WEEK)
    course.grade(WEEK, {"bystander": solution})
    with course.gradebook() as url:
        before = snapshot(url)
        folder = course.root / "incoming" / "restore"
        (folder / "changer").mkdir(parents=True, exist_ok=True)
        attack = _with(solution, "max_stable_lr", _CHANGE_EVERY_GRADE.format(url=url))
        (folder / "changer" / f"{WEEK}.ipynb").write_text(json.dumps(attack))
        results = grade_class(WEEK, folder, course.autograder, sandboxed=False)
        after = snapshot(url)
    assert not results[0].sandboxed
    assert "changed every grade" in course.graded_outputs(WEEK, "changer")
    assert "the gradebook changed outside this batch" in capsys.readouterr().out
    untouched = {k: v for k, v in before.items() if k[0] != "changer"}
    assert untouched and all(after[k] == v for k, v in untouched.items())


def test_a_flagged_submission_is_reviewed(course: CourseCopy) -> None:
    from course_admin import review

    solution = course.notebook("solutions", WEEK)
    flagged = _with(solution, "sgd_step", "torch.optim.SGD.step = lambda self, closure=None: None")
    result = course.grade(WEEK, {"under_review": flagged})["under_review"]
    assert result.status.value == "flagged" and result.total == FULL
    assert sum(s for s, _ in course.scores(WEEK, "under_review").values()) == 0
    with course.gradebook():
        shown = review.show(course.autograder, WEEK, "under_review")
        assert "replaces parts of torch.optim" in shown and "torch.optim.SGD.step =" in shown
        review.decide(course.autograder, WEEK, "under_review", give=True)
        assert sum(s for s, _ in course.scores(WEEK, "under_review").values()) == FULL
        review.decide(course.autograder, WEEK, "under_review", give=False)
        assert sum(s for s, _ in course.scores(WEEK, "under_review").values()) == 0
        assert "withheld after review" in review.show(course.autograder, WEEK, "under_review")


def test_grading_refuses_without_bubblewrap(
    released_course: CourseCopy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from course_admin.batch import grade_class

    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on the PATH
    missing = r"(?s)bubblewrap \(bwrap\) is not installed.*--no-sandbox"
    with pytest.raises(SystemExit, match=missing):
        grade_class(WEEK, tmp_path, released_course.autograder)


def test_notebooks_run_the_graded_course_s_helpers(tmp_path: Path) -> None:
    """An instructor grades a second checkout of the course with an environment installed
    from the first (one COURSE_VENV for both), from another folder. The notebooks must run
    the graded checkout's ``optlab``, the one the grader judges with, not the one the
    environment's editable install points at."""
    other = CourseCopy.create(REPO, tmp_path / "other-checkout")
    no_cache = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "optlab", other.root / "optlab", ignore=no_cache)
    with (other.root / "optlab" / "__init__.py").open("a") as f:
        f.write("\nGRADED_CHECKOUT = True\n")
    other.release([WEEK])
    shows = 'import optlab\nprint("helpers:", getattr(optlab, "GRADED_CHECKOUT", False))'
    submission = tmp_path / "incoming" / "alice" / f"{WEEK}.ipynb"
    submission.parent.mkdir(parents=True)
    solution = other.notebook("solutions", WEEK)
    submission.write_text(json.dumps(_with(solution, "max_stable_lr", append=shows)))
    run = subprocess.run(
        [sys.executable, "-m", "course_admin", "grade", WEEK, str(submission.parent.parent)],
        cwd=tmp_path,  # not the checkout: the current folder gives no optlab
        env=dict(os.environ, PYTHONPATH=str(other.autograder)),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "helpers: True" in other.graded_outputs(WEEK, "alice"), run.stdout
    assert sum(score for score, _ in other.scores(WEEK, "alice").values()) == FULL


def test_no_sandbox_grades_and_says_so(released_course: CourseCopy, capsys) -> None:
    from course_admin.batch import grade_class
    from course_admin.results import read_report

    folder = released_course.root / "incoming" / "unsandboxed"
    (folder / "free").mkdir(parents=True, exist_ok=True)
    solution = released_course.notebook("solutions", WEEK)
    (folder / "free" / f"{WEEK}.ipynb").write_text(json.dumps(solution))
    (result,) = grade_class(WEEK, folder, released_course.autograder, sandboxed=False)
    assert result.total == FULL and not result.sandboxed
    assert "graded WITHOUT a sandbox" in capsys.readouterr().out
    assert read_report(released_course.autograder / "reports", WEEK)["free"]["sandboxed"] is False
