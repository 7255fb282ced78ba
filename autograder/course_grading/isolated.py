"""Grading code run in a fresh interpreter that no student code has touched.

A submission runs in the grading kernel and could monkeypatch ``torch`` there, so the reference
answers are computed in a separate Python process: started isolated (``-I``: no user site
packages, no PYTHONPATH, not the submission's folder), with one thread, and given only the
grading code's folder.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

# The folder that holds the course_grading package.
GRADING_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120

_SCRIPT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from course_grading.isolated import child; child(*sys.argv[2:])"
)


def run_isolated(function: str, request: Any, timeout: float = TIMEOUT_S) -> Any:
    """``function(request)`` computed in a fresh, isolated interpreter.

    ``function`` is ``"package.module:name"``; the request and the answer travel through
    ``torch.save`` files, so they may hold tensors, numbers, strings, lists and dicts.
    """
    __tracebackhide__ = True
    with tempfile.TemporaryDirectory(prefix="course-reference-") as tmp:
        request_path, answer_path = Path(tmp, "request.pt"), Path(tmp, "answer.pt")
        torch.save(request, request_path)
        env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
        command = [
            sys.executable, "-I", "-c", _SCRIPT,
            str(GRADING_ROOT), function, str(request_path), str(answer_path),
        ]  # fmt: skip
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"the reference run failed (grader problem):\n{proc.stderr[-2000:]}")
        return torch.load(answer_path, weights_only=False)


def child(function: str, request_path: str, answer_path: str) -> None:
    """Entry point of the isolated process: read the request, call ``function``, save the answer."""
    torch.set_num_threads(1)
    module, _, name = function.partition(":")
    compute = getattr(importlib.import_module(module), name)
    torch.save(compute(torch.load(request_path, weights_only=False)), answer_path)
