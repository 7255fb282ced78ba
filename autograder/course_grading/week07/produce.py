"""Student side: Week 7's producers, run in the notebook's kernel.

The ZeRO-1 answer is a module file; the test cells hand in its path. ``partitions`` imports it
in the kernel and calls ``partition_parameters`` on the check's parameter sets; ``zero1_runs``
launches the ranks (``produce_ranks`` on each, gloo over 127.0.0.1) and returns what every rank
reported, or how the launch ended. ``byte_counts`` calls ``model_state_bytes``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from course_grading.core.harness import attempt, plain
from course_grading.week07.produce_ranks import ZeroCase, make_model

# The folder that holds course_grading (the kit's copy while grading): the ranks import the
# rank code from there.
GRADING_ROOT = Path(__file__).resolve().parents[2]
RANKS = "course_grading.week07.produce_ranks"


# --- model_state_memory ----------------------------------------------------------------------


def byte_counts(function: Callable[..., Any], calls: Sequence[dict[str, Any]]) -> list[dict]:
    """``float(function(*args, **kwargs))`` for each call, or the error it raised."""
    outcomes = []
    for call in calls:
        args, kwargs = list(call.get("args", ())), dict(call.get("kwargs", {}))
        value, error = attempt(lambda args=args, kwargs=kwargs: float(function(*args, **kwargs)))
        outcomes.append({"error": error} if error else {"value": value})
    return outcomes


# --- zero1: the partition --------------------------------------------------------------------


def partitions(path: Any, cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What ``partition_parameters`` of the module at ``path`` does with each case's parameters.

    A case gives the parameters as ``{"sizes": [...]}`` (1-d tensors of those sizes) or
    ``{"model": case}`` (the parameters of that case's model), and the ``world_size``. Each
    result lists, for two calls, every shard as the positions of its tensors in the given list
    (-1 for a tensor that is not one of them).
    """
    module, problem = _load(path)
    if problem is not None:
        return problem
    partition = getattr(module, "partition_parameters", None)
    if partition is None:
        return {"no_function": True}
    found = []
    for case in cases:
        params = _parameters(case)
        world_size = case["world_size"]

        def twice(params: list[torch.Tensor] = params, n: int = world_size) -> tuple[Any, Any]:
            return partition(list(params), n), partition(list(params), n)

        calls, error = attempt(twice)
        if error is not None:
            found.append({"error": error})
            continue
        shards, again = calls
        found.append({"shards": _positions(shards, params), "again": _positions(again, params)})
    return {"cases": found}


def _parameters(case: dict[str, Any]) -> list[torch.Tensor]:
    if "model" in case:
        return list(make_model(ZeroCase(**case["model"])).parameters())
    return [torch.zeros(n) for n in case["sizes"]]


def _positions(shards: Any, params: list[torch.Tensor]) -> dict[str, Any]:
    """The shards as lists of positions in ``params``, or what kept them from being read."""
    if not isinstance(shards, (list, tuple)):
        return {"is_list": False, "length": None}
    index = {id(p): i for i, p in enumerate(params)}

    def read() -> list[list[int]]:
        return [[index.get(id(p), -1) for p in shard] for shard in shards]

    positions, error = attempt(read)
    return {"is_list": True, "length": len(shards), "positions": positions, "error": error}


def _load(path: Any) -> tuple[Any, dict[str, Any] | None]:
    """The submitted module, imported afresh under a private name; or why it cannot be."""
    file = Path(path).resolve()
    if not file.is_file():
        return None, {"missing": file.name}
    name = f"_zero1_under_test_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        return None, {"missing": file.name}
    module = importlib.util.module_from_spec(spec)
    try:
        _, error = attempt(lambda: spec.loader.exec_module(module))
    finally:
        sys.modules.pop(name, None)
    if error is not None:
        return None, {"import_error": error, "file": file.name}
    return module, None


# --- zero1: runs on several processes --------------------------------------------------------


def zero1_runs(
    path: Any,
    world_size: int,
    cases: Sequence[dict[str, Any]],
    timeout: float,
    layouts: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Every rank's runs of ``cases`` on ``world_size`` ranks, or how the launch failed.

    ``{"ranks": [...]}`` holds what each rank returned (its runs, by case); otherwise one of
    ``missing`` (no module file), ``timeout`` (the launcher's message), ``submission`` (what
    a rank reported of the submission's error) or ``failed`` (a rank ended otherwise).
    """
    from optlab.launch import LaunchError, LaunchTimeout, launch

    file = Path(path).resolve()
    if not file.is_file():
        return {"missing": file.name}
    try:
        results = launch(
            RANKS,
            "run_cases",
            world_size,
            args=(str(file), list(cases), list(layouts) if layouts is not None else None),
            paths=[GRADING_ROOT],
            timeout=timeout,
        )
    except LaunchTimeout as exc:
        return {"timeout": str(exc)}
    except LaunchError as exc:
        error = str(exc.error or "")
        prefix = "SubmissionError: "
        if error.startswith(prefix):
            try:
                report = json.loads(error.removeprefix(prefix))
            except ValueError:
                report = None
            if isinstance(report, dict):
                return {"submission": plain(report)}
        rank = exc.rank if isinstance(exc.rank, int) else None
        return {"failed": {"rank": rank, "error": error}}
    return {"ranks": [_plain(r) for r in results]}


# How deeply a rank's results nest: runs, a run, its state dict, a param group, its params.
MAX_DEPTH = 10


def _plain(value: Any, depth: int = 0) -> Any:
    """Like :func:`course_grading.core.harness.plain`, but a dict may have int keys too.

    A state dict numbers its parameters (``state_dict()["state"][0]``); keys that are neither
    strings nor numbers become their ``repr``.
    """
    if isinstance(value, (dict, list, tuple)) and depth > MAX_DEPTH:
        return {"unsupported": "nested too deep"}
    if isinstance(value, dict):
        return {_key(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return plain(value)


def _key(key: Any) -> Any:
    if key is None or isinstance(key, (str, int, float, bool)):
        return key
    return repr(key)[:200]
