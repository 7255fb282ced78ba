"""A class's submissions, from a folder, a zip or the LMS downloads, put where nbgrader reads them.

Each student's notebook is copied into ``submitted/<student>/<week>/`` under the name the
gradebook expects. What would stop nbgrader is mended with a note (a renamed notebook, cells
copied so that a grade id appears twice) or refused with a reason (no notebook, invalid JSON).
"""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.utils import parse_utc

from course_admin.archives import UnsafeArchive, check_archive
from course_admin.paths import db_url
from course_admin.results import join

# Where nbgrader's collect and zip_collect write when a submission was handed in.
TIMESTAMP_FILE = "timestamp.txt"


def expected_notebooks(course_root: Path, week: str) -> list[str]:
    """Notebook names (without .ipynb) the gradebook expects for ``week``."""
    with Gradebook(db_url(course_root)) as gb:
        try:
            return sorted(nb.name for nb in gb.find_assignment(week).notebooks)
        except MissingEntry:
            raise SystemExit(
                f"course: {week} is not in the gradebook; run ./course release {week} first"
            ) from None


def unpack(submissions: Path, workdir: Path) -> Path:
    """A folder of ``<student>/...`` from a folder or a zip file of that layout."""
    if submissions.is_dir():
        return submissions
    if zipfile.is_zipfile(submissions):
        target = workdir / "unzipped"
        try:
            check_archive(submissions, nested=False)  # archives inside stay packed
        except UnsafeArchive as exc:
            raise SystemExit(f"course: {submissions} is not unpacked: {exc}") from None
        with zipfile.ZipFile(submissions) as archive:
            for member in archive.namelist():
                resolved = (target / member).resolve()
                if not str(resolved).startswith(str(target.resolve())):
                    raise SystemExit(f"course: {submissions} holds an unsafe path: {member}")
            archive.extractall(target)
        entries = [p for p in target.iterdir() if not p.name.startswith("__MACOSX")]
        # A zip of one folder that holds the student folders: use that folder.
        if len(entries) == 1 and entries[0].is_dir() and any(entries[0].iterdir()):
            inner = [p for p in entries[0].iterdir() if p.is_dir()]
            if inner and all(not p.suffix for p in inner):
                return entries[0]
        return target
    what = "is neither a folder nor a zip file" if submissions.exists() else "does not exist"
    raise SystemExit(
        f"course: {submissions} {what}; give a folder (or zip) of <student>/ folders, or put the "
        "files downloaded from the LMS in autograder/downloaded/<week>/archive/"
    )


def prepare(
    student_dir: Path, week: str, names: list[str], course_root: Path
) -> tuple[Path | None, str]:
    """Copy one student's files into submitted/; return (folder, note) or (None, reason)."""
    notebooks = sorted(student_dir.rglob("*.ipynb"))
    notebooks = [p for p in notebooks if ".ipynb_checkpoints" not in p.parts]
    if not notebooks:
        return None, "no notebook in the submission"
    target = course_root / "submitted" / student_dir.name / week
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    note = ""
    by_name = {p.stem: p for p in notebooks}
    for name in names:
        source = by_name.get(name)
        if source is None and len(names) == 1 and len(notebooks) == 1:
            source = notebooks[0]
            note = f"notebook renamed to {source.name}; graded as {name}.ipynb"
        if source is None:
            return None, f"missing notebook {name}.ipynb"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # duplicate cell ids are handled below
                nb = nbformat.read(source, as_version=4)
        except Exception as exc:  # nbformat raises several types for broken files
            return None, f"{source.name} is not a valid notebook ({type(exc).__name__}: {exc})"
        duplicates = _keep_last_copy(nb)
        if duplicates:
            note = join(note, f"copied cells {', '.join(duplicates)}: graded the last copy")
        nbformat.write(nb, target / f"{name}.ipynb")
    note = join(note, _keep_timestamp(student_dir, target))
    return target, note


def _keep_timestamp(student_dir: Path, target: Path) -> str:
    """Write nbgrader's timestamp file into ``target``, in UTC; a note if it cannot be read."""
    found = sorted(student_dir.rglob(TIMESTAMP_FILE))
    if not found:
        return ""
    text = found[0].read_text(errors="replace").strip()
    try:
        utc = parse_utc(text)
    except (ValueError, OverflowError):
        return f"{TIMESTAMP_FILE} holds no time ({text[:40]!r}): submission time not recorded"
    (target / TIMESTAMP_FILE).write_text(str(utc))
    return ""


def submission_time(folder: Path) -> str | None:
    """When the submission in ``folder`` was handed in, as UTC text, if it says."""
    path = folder / TIMESTAMP_FILE
    return path.read_text() if path.exists() else None


def _keep_last_copy(nb: nbformat.NotebookNode) -> list[str]:
    """Make every copy but the last of a duplicated nbgrader cell an ordinary cell.

    nbgrader refuses a notebook where two cells share a grade id; the student's code still
    runs in order, and the last copy is the one graded.
    """
    last: dict[str, int] = {}
    for i, cell in enumerate(nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id:
            last[grade_id] = i
    duplicated = []
    for i, cell in enumerate(nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id and last[grade_id] != i:
            del cell.metadata["nbgrader"]
            cell["id"] = f"copy-{i}"
            if grade_id not in duplicated:
                duplicated.append(grade_id)
    return duplicated
