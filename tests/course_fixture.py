"""A temporary copy of the course, driven through the instructor commands and nbgrader."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from course_admin.batch import StudentResult, grade_class
from course_admin.cli import release
from course_admin.gradebook import cell_scores
from course_admin.paths import db_url, weeks

# What a copy needs: the sources and the grading code, none of a class's state.
_IGNORE = shutil.ignore_patterns(
    "gradebook.db*",
    "submitted",
    "downloaded",
    "autograded",
    "feedback",
    "reports",
    "__pycache__",
    ".nbgrader.log",
)


@dataclass
class CourseCopy:
    """The course's source/ and autograder/ copied to ``root``, released there."""

    root: Path

    @property
    def autograder(self) -> Path:
        return self.root / "autograder"

    @classmethod
    def create(cls, repo: Path, root: Path) -> CourseCopy:
        for name in ("source", "autograder"):
            shutil.copytree(repo / name, root / name, ignore=_IGNORE)
        return cls(root)

    def weeks(self) -> list[str]:
        return weeks(self.root / "source")

    def release(self) -> None:
        release(self.weeks(), course_root=self.autograder)

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
        return {r.student: r for r in grade_class(week, folder, self.autograder)}

    def scores(self, week: str, student: str) -> dict[str, tuple[float, float]]:
        """{grade_id: (score, max_score)} from the gradebook."""
        return {
            s.grade_id: (s.score, s.max_score)
            for s in cell_scores(db_url(self.autograder), week, student)
        }

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


def replace_answer(nb: dict, grade_id: str, source: str) -> dict:
    """A copy of ``nb`` whose answer cell ``grade_id`` holds ``source``."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            cell["source"] = source
            return nb
    raise KeyError(f"no cell with grade_id {grade_id!r}")
