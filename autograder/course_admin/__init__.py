"""Instructor tools: release, grade a class, feedback, export, student edition."""

import os
import sys
from pathlib import Path

# nbformat validates notebooks with jsonschema, whose optional IRI format checker builds a
# grammar for seconds at import; notebooks never use that format, so every course process
# skips it (jsonschema falls back to not checking IRIs).
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

# nbgrader's gradebook shells out to `alembic`, found on PATH. Put this interpreter's bin/
# first, so that `.venv/bin/python benchmarks/...` works without activating the environment.
_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = os.pathsep.join(filter(None, [_BIN, os.environ.get("PATH", "")]))
