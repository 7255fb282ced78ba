"""Student side: Week 2's producers (the shared ones are in ``core.produce``).

``numbers`` and ``tuples`` call one of the student's functions and convert what it returns to
floats, as the checks read it; ``distances`` rebuilds the trajectories and landscapes the check
hands in and calls the student's ``distances_to_minimum`` on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from course_grading.core.harness import attempt

# How much of the repr of a wrong return value is kept.
REPR_CHARS = 120


def _argument(value: Any) -> Any:
    """A fresh copy of one input: ``{"ndarray": tensor}`` becomes a NumPy array."""
    if isinstance(value, dict) and "ndarray" in value:
        return value["ndarray"].detach().numpy().copy()
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return list(value)
    return value


def _call(function: Callable[..., Any], call: dict[str, Any]) -> Any:
    args = [_argument(a) for a in call.get("args", ())]
    kwargs = {k: _argument(v) for k, v in call.get("kwargs", {}).items()}
    return function(*args, **kwargs)


def numbers(function: Callable[..., Any], calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``float(function(*args, **kwargs))`` for each call, or the error that stopped it."""
    outcomes = []
    for call in calls:
        value, error = attempt(lambda call=call: float(_call(function, call)))
        outcomes.append({"error": error} if error else {"value": value})
    return outcomes


def tuples(function: Callable[..., Any], calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each call: the floats of the sequence ``function`` returned, and its repr.

    ``values`` is ``None`` when what came back is not a sequence of numbers; ``repr`` is the
    start of ``repr()`` of what came back.
    """
    outcomes = []
    for call in calls:
        returned, error = attempt(lambda call=call: _call(function, call))
        if error is not None:
            outcomes.append({"error": error})
            continue
        values, _ = attempt(lambda returned=returned: [float(v) for v in returned])
        text, _ = attempt(lambda returned=returned: f"{returned!r:.{REPR_CHARS}}")
        outcomes.append({"values": values, "repr": text if text is not None else "?"})
    return outcomes


def distances(
    distances_to_minimum: Callable[..., Any], runs: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``distances_to_minimum(trajectory, landscape)`` for each run, as a flat float64 tensor.

    Each run holds a recorded trajectory (``path``, ``losses``, ``diverged_at``) and the
    landscape it ran on (an ``optlab.landscapes`` class name and its constructor keywords).
    """
    from optlab import landscapes
    from optlab.trajectories import Trajectory

    outcomes = []
    for run in runs:
        landscape = getattr(landscapes, run["landscape"])(
            **{k: _tuples(v) for k, v in run["fields"].items()}
        )
        trajectory = Trajectory(
            path=run["path"].detach().numpy().copy(),
            losses=run["losses"].detach().numpy().copy(),
            diverged_at=run["diverged_at"],
        )

        def measure(trajectory: Any = trajectory, landscape: Any = landscape) -> torch.Tensor:
            found = distances_to_minimum(trajectory, landscape)
            return torch.from_numpy(np.asarray(found, dtype=np.float64).reshape(-1).copy())

        value, error = attempt(measure)
        outcomes.append({"error": error} if error else {"value": value})
    return outcomes


def _tuples(value: Any) -> Any:
    """Lists back to the tuples a landscape's fields hold."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value
