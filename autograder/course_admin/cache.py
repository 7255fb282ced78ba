"""A week's grading material, built once and reused by every batch until what it is made of changes.

Grading a week needs a gradebook that holds only the week's assignment (each student is graded
in a scratch copy of it), the week's grading kit (:mod:`course_admin.kit`) and the expected
values of its hidden checks (what the references compute: the same for every student). All
depend only on the source notebook, the course's nbgrader configuration, the grading code, the
helper package, the code that builds the kit and the installed torch and nbgrader, so they
are kept in ``autograder/cache/<week>-<key>/``, ``key`` being a hash of all of those: a
change to any of them makes a new folder. ``./course release`` builds them; ``./course
grade`` builds them when they are missing. The folder is the grader's own: no sandbox ever
sees it (only its ``kit/`` is mounted, read-only), and the expected values stay outside the
kit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbgrader
import torch
from course_grading.core.checks import expected_values
from nbgrader.converters import GenerateAssignment
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import capture_log
from traitlets.config.loader import PyFileConfigLoader

from course_admin import kit as kit_code
from course_admin import notebook_runner
from course_admin.kit import GRADING, HELPERS, Kit, build_kit

EXPECTED = "expected.pt"


@dataclass(frozen=True)
class Prepared:
    """A week's cached grading material."""

    template_db: Path  # the assignment-only gradebook
    kit: Kit
    expected: Path  # the hidden checks' expected values (see course_grading.core.checks)


def prepared(course_root: Path, week: str) -> Prepared:
    """``week``'s grading material, built if not cached yet."""
    folder = course_root / "cache" / f"{week}-{_key(course_root, week)}"
    if not folder.exists():
        _build(course_root, week, folder)
    return Prepared(folder / "gradebook.db", Kit.open(folder / "kit"), folder / EXPECTED)


def load_expected(path: Path) -> dict[str, list[Any]]:
    """The expected values :func:`prepared` saved (the grader's own file, never a student's)."""
    return torch.load(path, weights_only=False)


def _key(course_root: Path, week: str) -> str:
    source = (course_root / "../source").resolve()
    files = sorted((source / week).glob("*.ipynb")) + [source / "header.ipynb"]
    files += [course_root / "nbgrader_config.py", *sorted(GRADING.rglob("*.py"))]
    files += sorted(HELPERS.glob("*.py"))  # the references use it, and the kit holds a copy
    files += [Path(kit_code.__file__), Path(notebook_runner.__file__)]  # how the kit is made
    digest = hashlib.sha256(f"{torch.__version__} {nbgrader.__version__}".encode())
    for path in files:
        if path.exists():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _build(course_root: Path, week: str, folder: Path) -> None:
    """Build into a fresh folder, then move it into place (another grader may be faster)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{week}-", dir=folder.parent))
    try:
        _template_gradebook(course_root, week, building)
        build_kit(week, building / "kit")
        torch.save(expected_values(week), building / EXPECTED)
        try:
            os.rename(building, folder)
        except OSError:  # built meanwhile by another process: keep theirs
            return
        for old in folder.parent.glob(f"{week}-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _template_gradebook(course_root: Path, week: str, target: Path) -> None:
    """Generate ``week`` with nbgrader into a scratch course whose gradebook is ``target``'s."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_root)).load_config()
    config.CourseDirectory.root = str(target)
    config.CourseDirectory.source_directory = str((course_root / "../source").resolve())
    config.CourseDirectory.release_directory = str(target / "release")
    config.CourseDirectory.db_url = f"sqlite:///{target / 'gradebook.db'}"
    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id = week
    converter = GenerateAssignment(coursedir=coursedir, config=config)
    converter.force = True
    outcome = capture_log(converter)
    shutil.rmtree(target / "release", ignore_errors=True)
    if not outcome["success"]:
        raise SystemExit(
            f"course: could not prepare grading of {week}:\n{outcome.get('log', '')[-2000:]}"
        )
