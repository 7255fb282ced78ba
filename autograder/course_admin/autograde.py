"""Autograde one student with nbgrader's own ``Autograde`` converter, in a scratch course root.

The scratch course holds a gradebook with only the week's assignment (the batch's template)
and the student's submission, so that students can be graded side by side and a broken
submission fails alone. nbgrader's pipeline is the course's (``nbgrader_config.py``), in
which execution happens in the sandbox and the hidden checks are judged here, outside it
(:mod:`course_admin.preprocessors`). This runs in the grader's process or in one of its
worker processes; no student code runs in either.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.converters import Autograde
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import capture_log
from sqlalchemy.exc import SAWarning
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from course_admin.cache import Prepared
from course_admin.gradebook import CellScore, cell_scores
from course_admin.results import Status, StudentResult, join
from course_admin.sandbox import MEMORY_LIMIT_GB


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to grade one student of a batch."""

    course_root: Path
    week: str
    student: str
    material: Prepared
    sandboxed: bool


def grade(job: Job) -> StudentResult:
    """Autograde ``job.student`` with nbgrader in a scratch course; the result."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"grade-{job.student}-") as tmp:
        scratch = Path(tmp)
        shutil.copy2(job.material.template_db, scratch / "gradebook.db")
        submitted = Path("submitted") / job.student / job.week
        shutil.copytree(job.course_root / submitted, scratch / submitted)
        report = scratch / "run.json"
        config = _config(job, scratch)
        converter = Autograde(coursedir=_coursedir(job, config), config=config)
        converter.force = True
        converter.create_student = True
        with warnings.catch_warnings():
            # nbgrader's gradebook code triggers harmless SQLAlchemy autoflush warnings.
            warnings.simplefilter("ignore", SAWarning)
            outcome = capture_log(converter)
        run = json.loads(report.read_text()) if report.exists() else {}
        if not outcome["success"]:
            reason = _failure(outcome)
            return StudentResult(job.student, Status.NOT_GRADED, reason, sandboxed=job.sandboxed)
        try:
            scores = cell_scores(f"sqlite:///{scratch / 'gradebook.db'}", job.week, job.student)
        except Exception as exc:
            reason = f"the scratch gradebook could not be read ({exc!r:.120})"
            return StudentResult(job.student, Status.NOT_GRADED, reason, sandboxed=job.sandboxed)
        graded = scratch / "autograded" / job.student / job.week
        destination = job.course_root / "autograded" / job.student / job.week
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(graded, destination)
        peak = run.get("peak_kb")
        total = time.perf_counter() - start
        timings = {"whole grading": round(total, 2), "sandbox": run.get("wall_s")}
        timings.update(run.get("seconds", {}))
        return StudentResult(
            job.student,
            Status.GRADED,
            join(*_notes(graded, scores)),
            {s.grade_id: [s.score, s.max_score] for s in scores},
            wall_s=round(total, 1),
            peak_mb=round(peak / 1024, 1) if isinstance(peak, (int, float)) else None,
            sandboxed=job.sandboxed,
            timings=timings,
        )


def _coursedir(job: Job, config: Config) -> CourseDirectory:
    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id = job.week
    coursedir.student_id = job.student
    return coursedir


def _config(job: Job, scratch: Path) -> Config:
    """The course's nbgrader configuration, pointed at the scratch course and the batch's kit."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(job.course_root)).load_config()
    config.CourseDirectory.root = str(scratch)
    config.CourseDirectory.source_directory = str((job.course_root / "../source").resolve())
    config.CourseDirectory.db_url = f"sqlite:///{scratch / 'gradebook.db'}"
    config.SandboxedExecute.kit = str(job.material.kit.root)
    config.SandboxedExecute.expected = str(job.material.expected)
    config.SandboxedExecute.sandbox = job.sandboxed
    config.SandboxedExecute.report = str(scratch / "run.json")
    return config


def _failure(outcome: dict) -> str:
    """Why nbgrader could not grade the submission, in one line for the instructor."""
    text = outcome.get("error", "") + "\n" + outcome.get("log", "")
    stopped = re.findall(r"GradingStopped: (.+)", text)
    if stopped:
        return stopped[-1].strip()[:300]
    errors = [ln for ln in text.splitlines() if "ERROR" in ln]
    if errors:
        return errors[-1].split("]", 1)[-1].strip()[:300]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "nbgrader could not autograde it"


def _notes(graded: Path, scores: list[CellScore]) -> list[str]:
    """What a teacher should know about a graded notebook: timeouts, memory, missing tests."""
    notes = []
    errors = []
    for path in graded.glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    errors.append(f"{out.get('ename')}: {out.get('evalue')}")
    if any(e.startswith("CellTimeoutError") for e in errors):
        notes.append("a cell was stopped at the time limit")
    # numpy and Python raise MemoryError; torch's allocator raises a RuntimeError.
    if any(re.search(r"^MemoryError|OutOfMemoryError|can't allocate memory", e) for e in errors):
        notes.append(f"a cell ran out of memory (limit {MEMORY_LIMIT_GB:g} GB)")
    if any("No space left on device" in e for e in errors):
        notes.append("a cell ran out of disk space in the sandbox")
    missing = [s.grade_id for s in scores if s.score == 0 and s.max_score and not s.present]
    if missing:
        notes.append(f"test cells deleted from the notebook score 0: {', '.join(missing)}")
    return notes
