"""A week's grading kit: all the sandbox gets of the grading code, built once per course version.

The kit is a folder, mounted read-only in every sandbox of the batch:

- ``requests/<grade_id>.pt``: the inputs of each test cell's hidden check (which producer,
  on which inputs). No expected values, tolerances or mistake catalogues: those stay with
  the grader;
- ``grading/course_grading/``: a copy of the student side of the grading code (the producers
  and the harness), made by the grader, so that nothing a submission does reaches the real one;
- ``helpers/optlab/``: a copy of the course's helper package, the one the grader imported and
  judges with (whatever the environment's install points at);
- ``stubs/``: ``sitecustomize.py`` and the manifest that switch off the week's torch modules;
- ``notebook_runner.py``: what runs the notebook inside the sandbox;
- ``kit.json``: the assignment, the files to cover and the demonstration cells not to run;
- ``empty``: the empty file mounted over the switched-off modules' own files.
"""

from __future__ import annotations

import compileall
import fnmatch
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from course_grading.core.checks import demonstrations, hidden_ops, hidden_torch, plan
from course_grading.core.torch_hiding import hidden_files, manifest

import optlab
from course_admin import notebook_runner

GRADING = Path(__import__("course_grading").__file__).resolve().parent
# The course's helper package as the grader imported it: what the kit carries a copy of.
HELPERS = Path(optlab.__file__).resolve().parent
# The modules that run with the student's code, relative to course_grading/. Everything else
# there is the trusted side and never enters a sandbox.
STUDENT_SIDE = (
    "__init__.py",
    "*/__init__.py",
    "core/harness.py",
    "core/produce.py",
    "core/runs.py",
    "core/torch_stubs.py",
    "week*/produce*.py",
)
SITECUSTOMIZE = """\
# Every Python process of the sandbox starts here: switch off this week's torch modules.
from course_grading.core.torch_stubs import install

install()
"""


@dataclass(frozen=True)
class Kit:
    """A built kit: its folder, the files the sandbox must cover with ``empty`` and the ids
    of the demonstration cells the sandbox does not run."""

    root: Path
    assignment: str
    covered: tuple[Path, ...]
    not_run: tuple[str, ...]

    @property
    def empty(self) -> Path:
        """An empty file, mounted over each covered file."""
        return self.root / "empty"

    @classmethod
    def open(cls, root: Path) -> Kit:
        """The kit built earlier in ``root``."""
        about = json.loads((root / "kit.json").read_text())
        covered = tuple(Path(p) for p in about["covered"])
        return cls(root, about["assignment"], covered, tuple(about["not_run"]))


def student_side_files(root: Path = GRADING) -> list[Path]:
    """The student side of ``course_grading``: the files a sandbox gets a copy of."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatchcase(relative, pattern) for pattern in STUDENT_SIDE):
            found.append(path)
    return found


def build_kit(assignment: str, target: Path) -> Kit:
    """Write ``assignment``'s kit into the new folder ``target``."""
    requests = target / "requests"
    requests.mkdir(parents=True)
    for grade_id, parts in plan(assignment).items():
        torch.save({"parts": [part.request() for part in parts]}, requests / f"{grade_id}.pt")
    for path in student_side_files():
        copy = target / "grading" / "course_grading" / path.relative_to(GRADING)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
    no_cache = shutil.ignore_patterns("__pycache__")
    shutil.copytree(HELPERS, target / "helpers" / "optlab", ignore=no_cache)
    # The sandbox mounts the kit read-only, where Python cannot cache its bytecode: compile
    # it once here rather than in every kernel.
    for folder in ("grading", "helpers"):
        compileall.compile_dir(target / folder, quiet=1)
    stubs = target / "stubs"
    stubs.mkdir()
    (stubs / "sitecustomize.py").write_text(SITECUSTOMIZE)
    hidden = hidden_torch(assignment)
    (stubs / "manifest.json").write_text(json.dumps(manifest(hidden, hidden_ops(assignment))))
    shutil.copy2(notebook_runner.__file__, target / "notebook_runner.py")
    (target / "empty").write_bytes(b"")
    covered = [str(p) for p in hidden_files(hidden)]
    not_run = list(demonstrations(assignment))
    about = {"assignment": assignment, "covered": covered, "not_run": not_run}
    (target / "kit.json").write_text(json.dumps(about))
    return Kit.open(target)
