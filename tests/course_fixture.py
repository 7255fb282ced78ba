"""A temporary copy of the course, driven through the instructor commands and nbgrader."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from course_admin.batch import grade_class
from course_admin.cli import release
from course_admin.gradebook import cell_scores
from course_admin.paths import db_url, weeks
from course_admin.results import StudentResult

# What a copy needs: the sources and the grading code, none of a class's state.
_IGNORE = shutil.ignore_patterns(
    "gradebook.db*",
    "submitted",
    "downloaded",
    "autograded",
    "feedback",
    "reports",
    "cache",
    "__pycache__",
    ".nbgrader.log",
)


@dataclass
class CourseCopy:
    """The course's source/ and autograder/ copied to ``root``, released there.

    ``db_url``, when given, is the copy's gradebook (e.g. a PostgreSQL database); the copy's
    commands use it as ``COURSE_DB_URL`` says for the real course.
    """

    root: Path
    db_url: str | None = None

    @property
    def autograder(self) -> Path:
        return self.root / "autograder"

    @classmethod
    def create(cls, repo: Path, root: Path, db_url: str | None = None) -> CourseCopy:
        for name in ("source", "autograder"):
            shutil.copytree(repo / name, root / name, ignore=_IGNORE)
        return cls(root, db_url)

    @contextlib.contextmanager
    def gradebook(self) -> Iterator[str]:
        """Within the block, the course's commands use this copy's gradebook; its URL."""
        saved = os.environ.get("COURSE_DB_URL")
        if self.db_url:
            os.environ["COURSE_DB_URL"] = self.db_url
        else:
            os.environ.pop("COURSE_DB_URL", None)
        try:
            yield db_url(self.autograder)
        finally:
            if saved is None:
                os.environ.pop("COURSE_DB_URL", None)
            else:
                os.environ["COURSE_DB_URL"] = saved

    def weeks(self) -> list[str]:
        return weeks(self.root / "source")

    def release(self, week_ids: list[str] | None = None) -> None:
        with self.gradebook():
            release(week_ids or self.weeks(), course_root=self.autograder)

    def notebook(self, folder: str, week: str) -> dict:
        """The (only) notebook of ``week`` in release/ or solutions/, as JSON."""
        (path,) = (self.root / folder / week).glob("*.ipynb")
        return json.loads(path.read_text())

    def grade(self, week: str, submissions: dict[str, dict]) -> dict[str, StudentResult]:
        """Autograde notebooks given as {student: notebook JSON}; the result per student."""
        (name,) = [p.name for p in (self.root / "release" / week).glob("*.ipynb")]
        folder = self.root / "incoming" / week
        if folder.exists():
            shutil.rmtree(folder)
        for student, nb in submissions.items():
            (folder / student).mkdir(parents=True)
            (folder / student / name).write_text(json.dumps(nb))
        with self.gradebook():
            return {r.student: r for r in grade_class(week, folder, self.autograder)}

    def scores(self, week: str, student: str) -> dict[str, tuple[float, float]]:
        """{grade_id: (score, max_score)} from the gradebook."""
        with self.gradebook() as url:
            return {s.grade_id: (s.score, s.max_score) for s in cell_scores(url, week, student)}

    def graded_outputs(self, week: str, student: str) -> str:
        """All text output of the student's autograded notebook."""
        (path,) = (self.autograder / "autograded" / student / week).glob("*.ipynb")
        nb = json.loads(path.read_text())
        parts = []
        for cell in nb["cells"]:
            for out in cell.get("outputs", []):
                parts.extend(
                    out.get("text", [])
                    if isinstance(out.get("text"), list)
                    else [out.get("text", "")]
                )
                parts.append(out.get("evalue", ""))
                parts.extend(out.get("traceback", []))
        return "\n".join(parts)


def graded_cell(nb: dict, grade_id: str) -> dict:
    """The nbgrader cell ``grade_id`` of ``nb`` (the notebook's own dict, not a copy)."""
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(f"no cell with grade_id {grade_id!r}")


def replace_answer(nb: dict, grade_id: str, source: str) -> dict:
    """A copy of ``nb`` whose answer cell ``grade_id`` holds ``source``."""
    nb = json.loads(json.dumps(nb))
    graded_cell(nb, grade_id)["source"] = source
    return nb


def answer_source(nb: dict, grade_id: str) -> str:
    """The source of the answer cell ``grade_id`` of ``nb``."""
    return "".join(graded_cell(nb, grade_id)["source"])


def wrong_answer_files(folder: Path) -> list[Path]:
    """The typical wrong answers kept in ``folder``: whole cells (.py) and edits (.diff)."""
    return sorted([*folder.glob("*.py"), *folder.glob("*.diff")])


def wrong_answer(path: Path, solution: dict) -> tuple[str, str, str]:
    """(grade_id, phrase the feedback must contain, answer cell source) of a wrong answer file.

    A ``.py`` file is the whole answer cell. A ``.diff`` file holds the hunks of a unified diff
    against the solution's answer cell (each hunk is found by its lines; its numbers are not
    read), so a long answer's typical mistake shows as the few lines it changes.
    """
    text = path.read_text()
    grade_id = re.search(r"^# grade_id: (\S+)$", text, re.M)[1]
    expect = re.search(r"^# expect: (.+)$", text, re.M)[1]
    if path.suffix == ".py":
        return grade_id, expect, text
    return grade_id, expect, apply_diff(answer_source(solution, grade_id), text, path.name)


def apply_diff(source: str, diff: str, name: str) -> str:
    """``source`` with every ``@@`` hunk of ``diff`` applied where its old lines stand."""
    lines = source.split("\n")
    hunks = re.split(r"^@@.*\n", diff, flags=re.M)[1:]
    if not hunks:
        raise ValueError(f"{name}: no @@ hunk")
    for hunk in hunks:
        body = hunk.rstrip("\n").split("\n")
        old = [ln[1:] for ln in body if not ln.startswith("+")]
        new = [ln[1:] for ln in body if not ln.startswith("-")]
        at = [i for i in range(len(lines) - len(old) + 1) if lines[i : i + len(old)] == old]
        if len(at) != 1:
            raise ValueError(
                f"{name}: the hunk starting {old[0]!r} matches the solution {len(at)} times; "
                "update it to the solution's current lines"
            )
        lines[at[0] : at[0] + len(old)] = new
    return "\n".join(lines)


# Per week: typical wrong answers, and correct answers written otherwise than the solution.
SUBMISSIONS = Path(__file__).resolve().parent / "submissions"
CORRECT_ANSWERS = Path(__file__).resolve().parent / "correct_answers"


def answer_variants(folder: Path, solution: dict) -> dict[str, tuple[str, str, str]]:
    """{name: (grade_id, expected feedback text, answer source)} of the answer files in
    ``folder`` (none if it does not exist)."""
    return {path.stem: wrong_answer(path, solution) for path in wrong_answer_files(folder)}
