"""Grade a whole class: every student in isolation, in parallel, the gradebook kept intact.

nbgrader's ``autograde`` for a whole assignment stops at the first submission it cannot
process. Here each student is autograded by nbgrader on its own, in a scratch copy of the
course root with a gradebook that holds only the assignment, so that

- a broken or hostile submission fails alone and the batch goes on;
- several students can be graded at once without two processes writing one SQLite file;
- code in a submission never sees the class gradebook or the other students' work.

The parent process then copies each student's scores into the real gradebook with nbgrader's
API, and checks at the end that nothing else in it changed.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.utils import parse_utc
from sqlalchemy.exc import SAWarning
from tqdm.auto import tqdm

from course_admin import lms
from course_admin.archives import UnsafeArchive, check_archive
from course_admin.gradebook import cell_scores, snapshot
from course_admin.integrity import scan_notebook
from course_admin.peak import MARKER as PEAK_MARKER

# Wall-clock limit for one student's whole notebook; every cell also has nbgrader's timeout.
STUDENT_TIMEOUT_S = int(os.environ.get("COURSE_STUDENT_TIMEOUT_S", "1200"))
# Address-space limit of the grading process and the student's kernel.
MEMORY_LIMIT_GB = float(os.environ.get("COURSE_MEMORY_LIMIT_GB", "4"))
# Where nbgrader's collect and zip_collect write when a submission was handed in.
TIMESTAMP_FILE = "timestamp.txt"


@dataclass
class StudentResult:
    """What happened to one student's submission."""

    student: str
    status: str  # "graded", "flagged" (graded, points withheld for review) or "not graded"
    reason: str = ""
    scores: dict[str, list[float]] = field(default_factory=dict)  # grade_id -> [score, max]
    wall_s: float | None = None  # time to run the notebook and its tests
    peak_mb: float | None = None  # largest resident memory of the notebook's kernel
    submitted: str | None = None  # when it was handed in (UTC), if the submission says

    @property
    def total(self) -> float:
        """Points earned."""
        return sum(s for s, _ in self.scores.values())


def expected_notebooks(course_root: Path, week: str) -> list[str]:
    """Notebook names (without .ipynb) the gradebook expects for ``week``."""
    with Gradebook(_db_url(course_root)) as gb:
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
            note = "; ".join(
                filter(None, [note, f"copied cells {', '.join(duplicates)}: graded the last copy"])
            )
        nbformat.write(nb, target / f"{name}.ipynb")
    note = "; ".join(filter(None, [note, _keep_timestamp(student_dir, target)]))
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


def _limit_memory() -> None:
    limit = int(MEMORY_LIMIT_GB * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def template_gradebook(course_root: Path, week: str, workdir: Path) -> Path:
    """A fresh SQLite gradebook holding only ``week``'s assignment, generated from source/."""
    template = workdir / "template"
    template.mkdir()
    source = (course_root / "../source").resolve()
    proc = subprocess.run(
        [
            sys.executable, "-m", "nbgrader", "generate_assignment", week, "--force",
            f"--CourseDirectory.root={template}",
            f"--CourseDirectory.source_directory={source}",
            f"--CourseDirectory.release_directory={template / 'release'}",
            f"--CourseDirectory.db_url=sqlite:///{template / 'gradebook.db'}",
        ],
        cwd=course_root, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"course: could not prepare grading of {week}:\n{proc.stderr[-2000:]}")
    return template / "gradebook.db"


def _scratch_course(
    course_root: Path, week: str, student: str, scratch: Path, template_db: Path
) -> None:
    """A course root holding the config, the grading code and an assignment-only gradebook."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copy2(course_root / "nbgrader_config.py", scratch / "nbgrader_config.py")
    for package in ("course_grading", "course_admin"):
        shutil.copytree(course_root / package, scratch / package, ignore=ignore)
    shutil.copy2(template_db, scratch / "gradebook.db")
    shutil.copytree(
        course_root / "submitted" / student / week, scratch / "submitted" / student / week
    )


def autograde_one(course_root: Path, week: str, student: str, template_db: Path) -> StudentResult:
    """Autograde one prepared student with nbgrader in a scratch course root."""
    source = (course_root / "../source").resolve()
    with tempfile.TemporaryDirectory(prefix=f"grade-{student}-") as tmp:
        scratch = Path(tmp)
        _scratch_course(course_root, week, student, scratch, template_db)
        env = {k: v for k, v in os.environ.items() if k != "COURSE_DB_URL"}
        env["OMP_NUM_THREADS"] = "1"
        # Week 5's experiment logs go where the scratch course is cleaned up, not to /tmp.
        env["OPTLAB_RUNS"] = str(scratch / "runs")
        command = [
            sys.executable, "-m", "course_admin.peak",
            sys.executable, "-m", "nbgrader", "autograde", week,
            "--student", student, "--create", "--force",
            f"--CourseDirectory.root={scratch}",
            f"--CourseDirectory.source_directory={source}",
            f"--CourseDirectory.db_url=sqlite:///{scratch / 'gradebook.db'}",
        ]  # fmt: skip
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                command, cwd=scratch, env=env, capture_output=True, text=True,
                timeout=STUDENT_TIMEOUT_S, preexec_fn=_limit_memory,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return StudentResult(student, "not graded", f"took over {STUDENT_TIMEOUT_S} s")
        try:
            scores = cell_scores(f"sqlite:///{scratch / 'gradebook.db'}", week, student)
        except Exception as exc:  # the submission may have overwritten its scratch gradebook
            return StudentResult(
                student,
                "not graded",
                f"the grading folder was damaged while running ({exc!r:.120})",
            )
        graded = scratch / "autograded" / student / week
        if proc.returncode != 0 or not scores or not graded.is_dir():
            return StudentResult(student, "not graded", _failure_reason(proc))
        destination = course_root / "autograded" / student / week
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(graded, destination)
        return StudentResult(
            student,
            "graded",
            "; ".join(_notes(graded, scores)),
            {s.grade_id: [s.score, s.max_score] for s in scores},
            wall_s=round(time.perf_counter() - start, 1),
            peak_mb=_peak_mb(proc.stderr),
        )


def _peak_mb(stderr: str) -> float | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith(PEAK_MARKER):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _notes(graded: Path, scores: list) -> list[str]:
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
    missing = [s.grade_id for s in scores if s.score == 0 and s.max_score and not s.present]
    if missing:
        notes.append(f"test cells deleted from the notebook score 0: {', '.join(missing)}")
    return notes


def _failure_reason(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
    if any("Kernel died" in ln or "DeadKernel" in ln for ln in lines):
        return "the notebook's kernel died while running (sys.exit, os._exit or a crash)"
    if lines:
        return lines[-1].split("]", 1)[-1].strip()[:300]
    return f"nbgrader autograde exited with {proc.returncode}"


def record(course_root: Path, week: str, result: StudentResult) -> None:
    """Write one student's result into the real gradebook (replacing an earlier one)."""
    with Gradebook(_db_url(course_root)) as gb, warnings.catch_warnings():
        # nbgrader's add_submission triggers harmless SQLAlchemy autoflush warnings.
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(result.student)
        try:
            gb.remove_submission(week, result.student)
        except MissingEntry:
            pass
        when = {"timestamp": result.submitted} if result.submitted else {}
        gb.add_submission(week, result.student, **when)
        submission = gb.find_submission(week, result.student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                score, _ = result.scores.get(grade.name, [0.0, grade.max_score])
                grade.auto_score = score
                grade.manual_score = 0.0 if result.status == "flagged" else None
        gb.db.commit()


def grade_class(
    week: str, submissions: Path, course_root: Path, workers: int | None = None
) -> list[StudentResult]:
    """Grade every student in ``submissions``; print a summary; keep a JSON report."""
    names = expected_notebooks(course_root, week)
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    before = snapshot(_db_url(course_root))
    backup = _backup(course_root)
    results: list[StudentResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        uncollected: list[tuple[str, str]] = []
        lms_notes: dict[str, str] = {}
        if lms.is_lms_download(submissions, week):
            collected = lms.collect(week, submissions, course_root, Path(tmp))
            folder, uncollected, lms_notes = collected.folder, collected.skipped, collected.notes
        else:
            folder = unpack(submissions, Path(tmp))
        template_db = template_gradebook(course_root, week, Path(tmp))
        students = sorted(p for p in folder.iterdir() if p.is_dir() and p.name[0] not in "._")
        pending: dict[str, str] = {}
        handed_in: dict[str, str | None] = {}
        for student_dir in students:
            prepared, note = prepare(student_dir, week, names, course_root)
            note = "; ".join(filter(None, [lms_notes.get(student_dir.name), note]))
            if prepared is None:
                results.append(StudentResult(student_dir.name, "not graded", note))
            else:
                pending[student_dir.name] = note
                handed_in[student_dir.name] = submission_time(prepared)
        with ThreadPoolExecutor(workers) as pool:
            futures = {
                pool.submit(autograde_one, course_root, week, s, template_db): s for s in pending
            }
            progress = tqdm(as_completed(futures), total=len(futures), desc=f"grading {week}")
            for future in progress:
                try:
                    result = future.result()
                except Exception as exc:  # never let one student stop the batch
                    result = StudentResult(futures[future], "not graded", f"grader error: {exc!r}")
                result.submitted = handed_in[result.student]
                if result.status == "graded":
                    flags = scan_notebook(course_root / "submitted" / result.student / week)
                    if flags:
                        result.status = "flagged"
                        result.reason = "points withheld for review: " + "; ".join(flags)
                    else:
                        result.reason = "; ".join(
                            filter(None, [pending[result.student], result.reason])
                        )
                results.append(result)
    for result in results:
        record(course_root, week, result)
    _verify_untouched(course_root, week, before, backup, results)
    if backup is not None:
        backup.unlink()
    results.sort(key=lambda r: r.student)
    _write_report(course_root, week, results)
    _print_summary(week, results, uncollected)
    return results


def _verify_untouched(
    course_root: Path, week: str, before: dict, backup: Path | None, results: list[StudentResult]
) -> None:
    """Restore the gradebook if anything outside this batch changed during grading."""
    batch = {r.student for r in results}
    after = snapshot(_db_url(course_root))
    changed = {
        key for key in before.keys() | after.keys()
        if not (key[0] in batch and key[1] == week) and before.get(key) != after.get(key)
    }  # fmt: skip
    if changed:
        if backup is not None:
            shutil.copy2(backup, backup.with_suffix(""))
        for result in results:
            record(course_root, week, result)
        print(f"course: the gradebook changed outside this batch ({len(changed)} grades); restored")


def _write_report(course_root: Path, week: str, results: list[StudentResult]) -> None:
    reports = course_root / "reports"
    reports.mkdir(exist_ok=True)
    path = reports / f"{week}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    previous.update({r.student: asdict(r) for r in results})
    path.write_text(json.dumps(previous, indent=1, sort_keys=True))


def _print_summary(
    week: str, results: list[StudentResult], uncollected: list[tuple[str, str]]
) -> None:
    for r in results:
        if r.status == "graded":
            max_total = sum(m for _, m in r.scores.values())
            extra = f"  ({r.reason})" if r.reason else ""
            print(f"{r.student}: {r.total:g} / {max_total:g}{extra}")
    problems = [r for r in results if r.status != "graded"]
    if problems:
        print(f"\n{len(problems)} submission(s) of {week} need attention:")
        for r in problems:
            print(f"  {r.student}: {r.status}: {r.reason}")
    if uncollected:
        print(f"\n{len(uncollected)} downloaded file(s) skipped:")
        for name, why in uncollected:
            print(f"  {name}: {why}")
        if any(why == lms.NO_STUDENT for _, why in uncollected):
            print("  (set c.FileNameCollectorPlugin.named_regexp in autograder/nbgrader_config.py)")


def _db_url(course_root: Path) -> str:
    from course_admin.paths import db_url

    return db_url(course_root)


def _backup(course_root: Path) -> Path | None:
    """A copy of a SQLite gradebook to restore from (other databases keep their own backups)."""
    url = _db_url(course_root)
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    backup = path.with_suffix(".db.bak")
    shutil.copy2(path, backup)
    return backup
