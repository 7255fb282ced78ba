"""Run nbgrader's own command line inside the course root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def nbgrader(
    *args: str, course_root: Path, check: bool = True, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """``nbgrader ARGS`` run in ``course_root`` (where nbgrader_config.py is), output captured."""
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course_root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"nbgrader {' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc
