"""Instructor tools: release, grade a class, feedback, export, student edition."""

import os
import sys
from pathlib import Path

# nbgrader's gradebook shells out to `alembic`, found on PATH. Put this interpreter's bin/
# first, so that `.venv/bin/python benchmarks/...` works without activating the environment.
_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = os.pathsep.join(filter(None, [_BIN, os.environ.get("PATH", "")]))
