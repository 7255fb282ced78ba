"""Submissions downloaded from a learning-management system, sorted by nbgrader's zip_collect.

nbgrader's layout: the instructor puts the files and zip archives downloaded from the LMS in
``autograder/downloaded/<week>/archive/``. ``nbgrader zip_collect`` extracts them and sorts the
notebooks into ``submitted/<student>/<week>/`` by reading the student out of each file name.

The course's collector knows the names two common LMSs give to downloaded submissions; an
instructor whose LMS names files differently sets ``c.FileNameCollectorPlugin.named_regexp`` in
``autograder/nbgrader_config.py``, which then replaces them.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nbgrader.plugins import FileNameCollectorPlugin

from course_admin.archives import ARCHIVE_SUFFIXES, UnsafeArchive, check_archive
from course_admin.nbgrader_cli import nbgrader

# File names of downloaded submissions, matched against the file's whole path (as nbgrader does).
KNOWN_NAMES = {
    # Blackboard: <assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file name>
    "Blackboard": re.compile(
        r".*/.*_(?P<student_id>[^_/]+)_attempt_(?P<timestamp>\d{4}(?:-\d\d){5})_(?P<file_id>[^/]+)$"
    ),
    # Canvas: <lastfirst>_[late_]<user id>_<submission id>_<file name>[-<n>].ipynb, where -<n>
    # is what Canvas appends when a student uploads a file name a second time.
    "Canvas": re.compile(
        r".*/(?P<student_id>[a-z0-9]+)_(?:late_)?\d+_\d+_(?P<file_id>[^/]+?)(?:-\d+)?\.ipynb$"
    ),
}

# Canvas puts "late_" after the student in the name of a file handed in after the due date.
_CANVAS_LATE = re.compile(r"(?P<student_id>[a-z0-9]+)_late_\d+_\d+_")

# What nbgrader's zip_collect logs for a file whose name the collector did not recognise.
_SKIPPED = "Skipped submission with no match information provided: "
# Why such a file is left out, as the batch summary says it.
NO_STUDENT = "no student found in the name"


# Blackboard's attempt time, 2026-10-02-14-05-00. nbgrader reads timestamps with dateutil, which
# takes the "-14-05-00" of that form for a time-zone offset: attempts come out in the wrong order,
# and a time such as 23-59-59 stops zip_collect. The collector hands on ISO text instead.
_BLACKBOARD_TIME = re.compile(r"(\d{4}-\d\d-\d\d)-(\d\d)-(\d\d)-(\d\d)")


class LmsFileNameCollector(FileNameCollectorPlugin):
    """nbgrader's file-name collector, knowing the LMS names in KNOWN_NAMES by default."""

    def _match(self, filename: str) -> dict | None:
        if self.named_regexp:
            return super()._match(filename)
        for pattern in KNOWN_NAMES.values():
            match = pattern.match(filename)
            if match:
                info = match.groupdict()
                if info.get("timestamp"):
                    info["timestamp"] = _BLACKBOARD_TIME.sub(r"\1 \2:\3:\4", info["timestamp"])
                return info
        self.log.warning("Not a known LMS file name: %s", filename)
        return None


def is_lms_download(path: Path, week: str) -> bool:
    """Whether ``path`` is nbgrader's ``downloaded/`` folder holding ``<week>/archive/``."""
    return (path / week / "archive").is_dir()


@dataclass
class Collected:
    """What zip_collect made of the downloads."""

    folder: Path  # <student>/<week>/*.ipynb (and timestamp.txt where the LMS gave a time)
    skipped: list[tuple[str, str]]  # (file name, why it was left out)
    notes: dict[str, str]  # student -> what the LMS said of the submission


def collect(week: str, downloaded: Path, course_root: Path, workdir: Path) -> Collected:
    """Sort ``downloaded/<week>/archive/`` into student folders with ``nbgrader zip_collect``.

    Works on a copy in ``workdir``, so the instructor's downloads stay as they were; archives
    that are unsafe to unpack are left out of it.
    """
    archive = downloaded / week / "archive"
    if not any(archive.iterdir()):
        raise SystemExit(f"course: {archive} is empty; put the files downloaded from the LMS there")
    root = workdir / "lms"
    refused: list[tuple[str, str]] = []

    def unsafe(folder: str, names: list[str]) -> list[str]:
        left_out = []
        for name in names:
            path = Path(folder, name)
            if path.is_file() and name.endswith(ARCHIVE_SUFFIXES):
                try:
                    check_archive(path)
                except UnsafeArchive as exc:
                    refused.append((str(path.relative_to(archive)), f"not unpacked: {exc}"))
                    left_out.append(name)
        return left_out

    shutil.copytree(archive, root / "downloaded" / week / "archive", ignore=unsafe)
    release = (course_root / "../release").resolve()
    proc = nbgrader(
        "zip_collect", week, "--force",
        f"--CourseDirectory.root={root}",
        f"--CourseDirectory.release_directory={release}",
        course_root=course_root, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"course: nbgrader zip_collect {week} failed:\n{proc.stderr[-2000:]}")
    # Other files (Blackboard's receipts, for example) are skipped without a word.
    skipped = [line.split(_SKIPPED, 1)[1] for line in proc.stderr.splitlines() if _SKIPPED in line]
    uncollected = [
        (path.split(f"/{week}/extracted/", 1)[-1], NO_STUDENT)
        for path in skipped
        if path.endswith(".ipynb")
    ]
    extracted = root / "downloaded" / week / "extracted"
    notes = {student: "Canvas marked it late" for student in _marked_late(extracted)}
    return Collected(root / "submitted", refused + uncollected, notes)


def _marked_late(extracted: Path) -> set[str]:
    """Students whose Canvas file name says the submission came after the due date."""
    late = set()
    for path in extracted.rglob("*.ipynb"):
        match = _CANVAS_LATE.match(path.name)
        if match:
            late.add(match["student_id"])
    return late
