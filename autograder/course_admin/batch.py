"""Grade a whole class: every student in a sandbox of their own, in parallel, the gradebook kept.

nbgrader's ``autograde`` for a whole assignment stops at the first submission it cannot
process. Here each student is autograded on their own, by nbgrader's ``Autograde`` converter
in a scratch course root (:mod:`course_admin.autograde`), with the notebook run in a bubblewrap
sandbox and the hidden checks judged outside it, so that

- a broken or hostile submission fails alone and the batch goes on;
- several students can be graded at once without two processes writing one SQLite file;
- code in a submission never sees the gradebook, the solutions, the grading code's trusted
  side, the other students' work or the network, and nothing it starts outlives its grading.

The grader then copies each student's scores into the real gradebook with nbgrader's API, and
checks at the end that nothing outside the batch changed.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from course_admin import cache, lms, sandbox
from course_admin.autograde import Job, grade
from course_admin.gradebook import Snapshot, record, restore, snapshot
from course_admin.integrity import scan_notebook
from course_admin.paths import db_url
from course_admin.results import Status, StudentResult, join, print_summary, write_report
from course_admin.submissions import expected_notebooks, prepare, submission_time, unpack

NO_SANDBOX_HINT = (
    "To grade without a sandbox anyway (the students' code then runs with your rights and can "
    "read the solutions), pass --no-sandbox."
)


def grade_class(
    week: str,
    submissions: Path,
    course_root: Path,
    workers: int | None = None,
    sandboxed: bool = True,
    shard: tuple[int, int] = (1, 1),
) -> list[StudentResult]:
    """Grade every student in ``submissions``; print a summary; keep a JSON report.

    ``shard=(k, n)`` grades only the k-th of n slices of the students (see :func:`shard_of`),
    so that n machines sharing the course and one gradebook can grade a class together.
    """
    if sandboxed and (why := sandbox.unavailable()):
        raise SystemExit(f"course: cannot grade in a sandbox: {why}.\n{NO_SANDBOX_HINT}")
    names = expected_notebooks(course_root, week)
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    before = snapshot(db_url(course_root))
    results: list[StudentResult] = []
    with tempfile.TemporaryDirectory(prefix="course-batch-") as tmp:
        skipped: list[tuple[str, str]] = []
        lms_notes: dict[str, str] = {}
        if lms.is_lms_download(submissions, week):
            collected = lms.collect(week, submissions, course_root, Path(tmp))
            folder, skipped, lms_notes = collected.folder, collected.skipped, collected.notes
        else:
            folder = unpack(submissions, Path(tmp))
        everyone = sorted(p for p in folder.iterdir() if p.is_dir() and p.name[0] not in "._")
        students = [p for p in everyone if shard_of(p.name, shard[1]) == shard[0]]
        jobs: list[Job] = []
        notes: dict[str, str] = {}
        handed_in: dict[str, str | None] = {}
        material = cache.prepared(course_root, week)
        for student_dir in students:
            prepared, note = prepare(student_dir, week, names, course_root)
            note = join(lms_notes.get(student_dir.name), note)
            if prepared is None:
                results.append(StudentResult(student_dir.name, Status.NOT_GRADED, note))
                continue
            notes[student_dir.name] = note
            handed_in[student_dir.name] = submission_time(prepared)
            jobs.append(Job(course_root, week, student_dir.name, material, sandboxed))
        progress = tqdm(_graded(jobs, workers), total=len(jobs), desc=f"grading {week}")
        for result in progress:
            result.submitted = handed_in[result.student]
            if result.status == Status.GRADED:
                flags = scan_notebook(course_root / "submitted" / result.student / week)
                if flags:
                    result.status = Status.FLAGGED
                    result.reason = "points withheld for review: " + "; ".join(flags)
                else:
                    result.reason = join(notes[result.student], result.reason)
            results.append(result)
    for result in results:
        record(db_url(course_root), week, result)
    _verify_untouched(db_url(course_root), week, before, {p.name for p in everyone})
    results.sort(key=lambda r: r.student)
    write_report(course_root / "reports", week, results)
    print_summary(week, results, skipped, sandboxed)
    return results


def shard_of(student: str, shards: int) -> int:
    """Which of ``shards`` slices (1..shards) grades ``student``: a hash of the name, so that
    every machine computes the same slices, and adding a student moves no one else."""
    return int(hashlib.sha256(student.encode()).hexdigest(), 16) % shards + 1


def _graded(jobs: list[Job], workers: int) -> Iterator[StudentResult]:
    """Each job's result, as they finish; a worker's own failure never stops the batch."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield _safely(job)
        return
    context = multiprocessing.get_context("forkserver")
    # The workers fork from a server that has imported the grader once, so each starts warm.
    context.set_forkserver_preload(["course_admin.autograde"])
    # Each worker freezes what it inherited, so that its collections leave the grader's
    # modules alone.
    with ProcessPoolExecutor(workers, mp_context=context, initializer=gc.freeze) as pool:
        futures: dict[Future, Job] = {pool.submit(_safely, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # the worker process itself failed
                job = futures[future]
                yield StudentResult(job.student, Status.NOT_GRADED, f"grader error: {exc!r}")


def _safely(job: Job) -> StudentResult:
    try:
        return grade(job)
    except Exception as exc:  # never let one student stop the batch
        return StudentResult(job.student, Status.NOT_GRADED, f"grader error: {exc!r}")


def _verify_untouched(db: str, week: str, before: Snapshot, class_students: set[str]) -> None:
    """Put back whatever changed in the gradebook outside this week's class while grading.

    Only this week's submissions of the students being graded (here or by other shards of
    the same class) may change; everything else is compared with the snapshot taken before
    and restored from it. The sandbox keeps students' code away from the gradebook; this
    catches the rest (``--no-sandbox``, a slip in the grader).
    """
    after = snapshot(db)
    changed = {
        key for key in before.keys() | after.keys()
        if not (key[1] == week and key[0] in class_students) and before.get(key) != after.get(key)
    }  # fmt: skip
    if changed:
        restore(db, before, changed)
        print(f"course: the gradebook changed outside this batch ({len(changed)}); restored")
