"""Reference runs of ``torch.optim``, computed where no student code has run.

A submission runs in the grading kernel and could monkeypatch ``torch`` there; the reference is
therefore computed by :func:`course_grading.isolated.run_isolated` in a fresh interpreter.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from typing import Any

import torch

from course_grading.isolated import run_isolated
from course_grading.runs import Case, Snapshots, run_case


def reference_runs(
    reference: str, cases: Sequence[Case], batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> list[Snapshots]:
    """Run ``reference`` (a dotted name such as ``"torch.optim.SGD"``) on every case."""
    __tracebackhide__ = True
    request = {
        "reference": reference,
        "cases": [dataclasses.asdict(c) for c in cases],
        "batches": list(batches),
    }
    return run_isolated("course_grading.reference:compute_runs", request)


def compute_runs(request: dict[str, Any]) -> list[Snapshots]:
    """What :func:`reference_runs` asks the isolated process for."""
    reference_cls = load_class(request["reference"])
    return [
        run_case(reference_cls, case_from_dict(c), request["batches"]) for c in request["cases"]
    ]


def load_class(dotted: str) -> Any:
    """The object a dotted name such as ``"torch.optim.SGD"`` names."""
    module_name, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def case_from_dict(data: dict) -> Case:
    """A Case back from its dataclasses.asdict form (lists become tuples again)."""
    data = dict(data)
    data["groups"] = tuple(data["groups"])
    data["frozen"] = tuple(data["frozen"])
    return Case(**data)
