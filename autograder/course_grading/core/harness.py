"""Student side: what a hidden test cell calls, and the one way the student's code is run.

A hidden test cell hands the student's objects in, by its grade id::

    from course_grading.core.harness import hand_in

    hand_in("sgd_step_test_basic", SGD)

While a notebook is graded, the trusted side has written, for every test cell, the inputs of
its check (a *request*: which producer to run, on which inputs). :func:`hand_in` runs the
producers on the student's objects in this process, the sandboxed kernel, and saves what they
return (numbers, never a verdict). After the notebook has run, the trusted side compares those
outputs with its references, outside the sandbox, and decides the points. Nothing here knows
the expected values, the tolerances or the typical mistakes.

Outside grading (no request folder set), :func:`hand_in` runs the whole check in this process
with :mod:`course_grading.core.local`, which exists only where the whole course is: that is
how an instructor runs a source notebook.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

REQUESTS_ENV = "COURSE_CHECK_REQUESTS"
OUTPUTS_ENV = "COURSE_CHECK_OUTPUTS"
# The longest error message kept from the student's code.
MESSAGE_CHARS = 1500

T = TypeVar("T")


def hand_in(grade_id: str, *answers: Any) -> None:
    """Run this test cell's hidden check on ``answers``; its verdict comes with the grade."""
    requests = os.environ.get(REQUESTS_ENV)
    if not requests:
        from course_grading.core.local import check_here

        check_here(grade_id, *answers)
        return
    start = time.perf_counter()
    request = torch.load(Path(requests) / f"{grade_id}.pt", weights_only=True)
    outputs = [produce(part, answers) for part in request["parts"]]
    folder = Path(os.environ[OUTPUTS_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    seconds = time.perf_counter() - start  # for the benchmarks
    torch.save({"parts": outputs, "seconds": seconds}, folder / f"{grade_id}.pt")


def produce(part: dict[str, Any], answers: Sequence[Any]) -> Any:
    """Run one part's producer (``"module:function"`` under ``course_grading``) on ``answers``."""
    module, _, name = part["producer"].partition(":")
    producer = getattr(importlib.import_module(f"course_grading.{module}"), name)
    try:
        return producer(*answers, **part["inputs"])
    except (Exception, SystemExit) as exc:  # a producer must not stop the cell
        return {"producer_failed": describe_error(exc)}


_INHERITED = object()


class ForbiddenCall(RuntimeError):
    """The student's code called something the check forbids."""


@contextlib.contextmanager
def student_code(forbid: Sequence[str] = ()) -> Iterator[None]:
    """Run the student's code: warnings kept off stderr, the ``forbid`` functions blocked.

    ``forbid`` holds dotted names (``"torch.nn.init._calculate_fan_in_and_fan_out"``); a call
    to one raises :class:`ForbiddenCall` naming it.
    """
    saved = []
    for dotted in forbid:
        owner_name, _, attr = dotted.rpartition(".")
        owner = _resolve(owner_name)
        if owner is None or not hasattr(owner, attr):
            continue
        # An inherited attribute is shadowed for the block and unshadowed after it.
        saved.append((owner, attr, vars(owner).get(attr, _INHERITED)))
        setattr(owner, attr, _refuser(dotted))
    try:
        with warnings.catch_warnings():
            # nbgrader fails a cell that writes to stderr; a warning is not a wrong answer.
            warnings.simplefilter("ignore")
            yield
    finally:
        for owner, attr, original in reversed(saved):
            if original is _INHERITED:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


def attempt(
    call: Callable[[], T], forbid: Sequence[str] = ()
) -> tuple[T | None, dict[str, Any] | None]:
    """``(result, None)``, or ``(None, error)`` when the student's code raised."""
    try:
        with student_code(forbid):
            return call(), None
    except (Exception, SystemExit) as exc:
        return None, describe_error(exc)


def describe_error(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data: its type, message and what kind of exception it is."""
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:MESSAGE_CHARS],
        "value_error": isinstance(exc, ValueError),
        "forbidden": str(exc) if isinstance(exc, ForbiddenCall) else None,
    }


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as data that travels to the trusted side: tensors, numbers, text, containers.

    Anything else becomes ``{"unsupported": type name}``, which no check accepts.
    """
    if depth > 6:
        return {"unsupported": "nested too deep"}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().clone().cpu()
    if isinstance(value, (list, tuple)):
        items = [plain(v, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
        return {k: plain(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item) and not hasattr(value, "__len__"):
        number = value.item()  # a NumPy scalar
        return number if isinstance(number, (int, float, bool)) else float(number)
    if hasattr(value, "__array__"):
        return torch.as_tensor(value).clone()
    return {"unsupported": type(value).__name__}


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    try:
        obj: Any = importlib.import_module(parts[0])
    except ImportError:
        return None
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            try:
                obj = importlib.import_module(".".join(parts[: i + 1]))
            except ImportError:
                return None
    return obj


def _refuser(dotted: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise ForbiddenCall(dotted)

    return refuse
