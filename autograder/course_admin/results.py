"""What happened to each submission of a batch: the record, the report file and the summary."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_admin.lms import NO_STUDENT


class Status(enum.StrEnum):
    """Where a submission stands after grading."""

    GRADED = "graded"
    FLAGGED = "flagged"  # graded, points withheld until an instructor reviews it
    NOT_GRADED = "not graded"
    REVIEWED = "reviewed"  # flagged, then given its points by an instructor
    WITHHELD = "withheld"  # flagged, and its points withheld after review


@dataclass
class StudentResult:
    """What happened to one student's submission."""

    student: str
    status: Status
    reason: str = ""
    scores: dict[str, list[float]] = field(default_factory=dict)  # grade_id -> [score, max]
    wall_s: float | None = None  # time to run the notebook and its checks
    peak_mb: float | None = None  # largest resident memory of the notebook's kernel
    submitted: str | None = None  # when it was handed in (UTC), if the submission says
    sandboxed: bool = True  # whether the notebook ran in the sandbox
    timings: dict[str, float] = field(default_factory=dict)  # where the time went, seconds

    @property
    def total(self) -> float:
        """Points earned."""
        return sum(s for s, _ in self.scores.values())

    def to_json(self) -> dict:
        """The result as it is kept in the report file."""
        return {**asdict(self), "status": self.status.value}


def join(*notes: str | None) -> str:
    """Notes about a submission, in one line."""
    return "; ".join(n for n in notes if n)


def write_report(reports: Path, week: str, results: list[StudentResult]) -> None:
    """Keep each result in ``reports/<week>/<student>.json`` (replacing an earlier one).

    One file per student, so that batches grading other students of the same week at the
    same time (shards on other machines) never write the same file.
    """
    for result in results:
        write_entry(reports, week, result.student, result.to_json())


def write_entry(reports: Path, week: str, student: str, entry: dict) -> None:
    """Write one student's report entry."""
    folder = reports / week
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{student}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(entry, indent=1, sort_keys=True))
    partial.replace(path)


def read_report(reports: Path, week: str) -> dict[str, dict]:
    """Every student's report entry for ``week``: student -> what happened."""
    folder = reports / week
    if not folder.is_dir():
        return {}
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def print_summary(
    week: str, results: list[StudentResult], skipped: list[tuple[str, str]], sandboxed: bool
) -> None:
    """The batch's summary for the instructor: scores, then what needs a look."""
    for r in results:
        if r.status == Status.GRADED:
            max_total = sum(m for _, m in r.scores.values())
            extra = f"  ({r.reason})" if r.reason else ""
            print(f"{r.student}: {r.total:g} / {max_total:g}{extra}")
    problems = [r for r in results if r.status != Status.GRADED]
    if problems:
        print(f"\n{len(problems)} submission(s) of {week} need attention:")
        for r in problems:
            print(f"  {r.student}: {r.status.value}: {r.reason}")
    if skipped:
        print(f"\n{len(skipped)} downloaded file(s) skipped:")
        for name, why in skipped:
            print(f"  {name}: {why}")
        if any(why == NO_STUDENT for _, why in skipped):
            print("  (set c.FileNameCollectorPlugin.named_regexp in autograder/nbgrader_config.py)")
    if not sandboxed:
        print(
            f"\nWARNING: {week} was graded WITHOUT a sandbox (--no-sandbox): the students' code "
            "ran with your rights and could read or change anything you can."
        )
