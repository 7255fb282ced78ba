"""Where the course keeps things."""

import os
from pathlib import Path

AUTOGRADER = Path(__file__).resolve().parent.parent
ROOT = AUTOGRADER.parent
SOURCE = ROOT / "source"
RELEASE = ROOT / "release"


def weeks(source: Path = SOURCE) -> list[str]:
    """The assignment ids (week folders) under ``source``, in order."""
    return sorted(p.name for p in source.iterdir() if p.is_dir() and p.name.startswith("week"))


def db_url(course_root: Path = AUTOGRADER) -> str:
    """The gradebook's URL: COURSE_DB_URL if set (as in nbgrader_config.py), else SQLite."""
    return os.environ.get("COURSE_DB_URL", f"sqlite:///{course_root / 'gradebook.db'}")
