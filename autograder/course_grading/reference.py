"""Reference runs of ``torch.optim`` in a fresh interpreter.

A submission runs in the grading kernel and could monkeypatch ``torch`` there; the reference is
therefore computed in a separate, isolated Python process that never sees student code.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from course_grading.runs import Case, Snapshots, run_case

GRADING_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TIMEOUT_S = 120

_SCRIPT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from course_grading.reference import main; main(sys.argv[2], sys.argv[3])"
)


def reference_runs(
    reference: str, cases: Sequence[Case], batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> list[Snapshots]:
    """Run ``reference`` (a dotted name such as ``"torch.optim.SGD"``) on every case."""
    __tracebackhide__ = True
    with tempfile.TemporaryDirectory(prefix="course-reference-") as tmp:
        request, answer = Path(tmp, "request.pt"), Path(tmp, "answer.pt")
        torch.save(
            {
                "reference": reference,
                "cases": [dataclasses.asdict(c) for c in cases],
                "batches": list(batches),
            },
            request,
        )
        env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _SCRIPT, str(GRADING_ROOT), str(request), str(answer)],
            env=env,
            capture_output=True,
            text=True,
            timeout=REFERENCE_TIMEOUT_S,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the reference run failed (grader problem):\n{proc.stderr[-2000:]}")
        return torch.load(answer)


def main(request_path: str, answer_path: str) -> None:
    """Entry point of the reference process: read the request, write the snapshots."""
    torch.set_num_threads(1)
    request = torch.load(request_path)
    module_name, _, attr = request["reference"].rpartition(".")
    reference_cls = getattr(importlib.import_module(module_name), attr)
    cases = [case_from_dict(d) for d in request["cases"]]
    torch.save([run_case(reference_cls, c, request["batches"]) for c in cases], answer_path)


def case_from_dict(data: dict) -> Case:
    """A Case back from its dataclasses.asdict form (lists become tuples again)."""
    data = dict(data)
    data["groups"] = tuple(data["groups"])
    data["frozen"] = tuple(data["frozen"])
    return Case(**data)
