"""Trusted side: Week 2's hidden checks, by test cell.

Exercise ids (grade ids in the notebook start with them): ``sgd_momentum``, ``best_rates``,
``measured_rate``. Week 2 hides every ``torch.optim`` optimizer from the sandbox: the SGD must
be the student's own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from course_grading.core.buffers import buffers
from course_grading.core.checks import CheckFailed, Checks, Part, error_text
from course_grading.core.interface import closure, value_errors
from course_grading.core.optimizers import OptimizerSpec
from course_grading.core.tables import subclass_cells
from course_grading.core.torch_hiding import TORCH_OPTIMIZERS
from course_grading.week02.cases import (
    BUFFER_CASES,
    BUFFER_STOP,
    DISTANCE_RUNS,
    DISTANCE_STEPS,
    SGD_INVALID,
    SGD_MOMENTUM_CASES,
    SGD_VALID,
    SPECTRA,
    distance_runs,
    fit,
    gd_best,
    heavy_ball_best,
    sequences,
    spectrum_argument,
)
from course_grading.week02.mistakes import (
    SGD_MOMENTUM_MISTAKES,
    distances_mistakes,
    gd_best_mistakes,
    heavy_ball_best_mistakes,
    lr_in_buffer_hint,
    measured_rate_mistakes,
    shared_buffer_hint,
)

HIDDEN_TORCH = TORCH_OPTIMIZERS

SGD = OptimizerSpec.of("SGD", SGD_MOMENTUM_MISTAKES)


def checks() -> Checks:
    """Every test cell's hidden check."""
    return {
        # sgd_momentum_test_state, the table's last cell, also checks buffers and step(closure).
        **subclass_cells(
            SGD,
            SGD_MOMENTUM_CASES,
            hint=shared_buffer_hint,
            state=[
                buffers(SGD, BUFFER_CASES, stop=BUFFER_STOP, hint=lr_in_buffer_hint),
                closure("SGD", {"lr": 0.1, "momentum": 0.9}),
            ],
        ),
        "sgd_momentum_test_validation": [value_errors("SGD", SGD_INVALID, SGD_VALID)],
        "best_rates_test_gd": [best_rates("gd_best")],
        "best_rates_test_heavy_ball": [best_rates("heavy_ball_best")],
        "measured_rate_test_fit": [measured_rate_fit()],
        "measured_rate_test_distances": [measured_rate_distances()],
    }


# --- best_rates --------------------------------------------------------------------------------


# answer -> (the names of the values it returns, its reference, its typical mistakes, and the
# parity of the calls that hand the spectrum in as a tensor, the others handing in a list).
_BEST_RATES = {
    # The best gradient-descent step size 2/(λ1+λn) and its rate (κ−1)/(κ+1).
    "gd_best": (("step size", "rate"), gd_best, gd_best_mistakes, 1),
    # The best heavy-ball step size α, momentum β and rate (√κ−1)/(√κ+1).
    "heavy_ball_best": (
        ("step size", "momentum", "rate"),
        heavy_ball_best,
        heavy_ball_best_mistakes,
        0,
    ),
}


def best_rates(answer: str) -> Part:
    """The values ``answer`` returns for every spectrum, against the formulas'."""
    names, best, mistakes, tensor_parity = _BEST_RATES[answer]
    calls = [
        {"args": [spectrum_argument(spectrum, as_tensor=i % 2 == tensor_parity)]}
        for i, spectrum in enumerate(SPECTRA)
    ]
    return Part(
        "week02.produce:tuples",
        judge_best_rates,
        inputs={"calls": calls},
        reference=lambda: [best(spectrum) for spectrum in SPECTRA],
        context={"answer": answer, "names": names, "mistakes": mistakes},
    )


def judge_best_rates(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`best_rates`."""
    answer, names = part.context["answer"], part.context["names"]
    for spectrum, want, outcome in zip(SPECTRA, part.expected, outcomes, strict=True):
        got = _values(outcome, answer, spectrum, len(names))
        for name, value, expected, mistakes in zip(
            names, got, want, part.context["mistakes"](spectrum), strict=True
        ):
            if not _close(value, expected):
                raise CheckFailed(
                    f"for {_spectrum(spectrum)}, {answer}'s {name} is {value:.10g}; "
                    f"expected {expected:.10g}." + _explain(value, mistakes)
                )


def _values(outcome: dict[str, Any], answer: str, spectrum: Sequence[float], size: int) -> list:
    """The ``size`` numbers the student's function returned, or CheckFailed."""
    if outcome.get("error"):
        raise CheckFailed(f"{answer}({_spectrum(spectrum)}) raised {error_text(outcome['error'])}")
    values = outcome["values"]
    if values is None:
        values = []
    if not isinstance(values, list) or not all(type(v) is float for v in values):
        raise CheckFailed(f"{answer} should return a tuple of {size} numbers.")
    if len(values) != size:
        raise CheckFailed(
            f"{answer} should return a tuple of {size} numbers; for {_spectrum(spectrum)} it "
            f"returned {str(outcome['repr'])[:120]}."
        )
    return values


def _spectrum(eigenvalues: Sequence[float]) -> str:
    return "eigenvalues " + ", ".join(f"{float(v):g}" for v in eigenvalues)


def _close(a: float, b: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _explain(got: float, mistakes: dict[str, float]) -> str:
    for sentence, value in mistakes.items():
        if _close(got, value):
            return f" This looks like a typical mistake: {sentence}"
    return ""


# --- measured_rate -----------------------------------------------------------------------------


def measured_rate_fit() -> Part:
    """exp of the least-squares slope of log(distance) against the step, from `skip` on."""
    found = sequences()
    calls = []
    for _, distances, skip in found:
        arg = (
            list(distances) if isinstance(distances, list) else {"ndarray": torch.tensor(distances)}
        )
        calls.append({"args": [arg], "kwargs": {"skip": skip} if skip else {}})
    arrays = [np.asarray(distances, dtype=np.float64) for _, distances, _ in found]
    return Part(
        "week02.produce:numbers",
        judge_measured_rate_fit,
        inputs={"calls": calls},
        reference=lambda: [fit(arr, skip) for arr, (_, _, skip) in zip(arrays, found, strict=True)],
        context={
            "sequences": [
                (name, arr, skip) for arr, (name, _, skip) in zip(arrays, found, strict=True)
            ]
        },
    )


def judge_measured_rate_fit(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`measured_rate_fit`."""
    for (name, arr, skip), expected, outcome in zip(
        part.context["sequences"], part.expected, outcomes, strict=True
    ):
        if outcome.get("error"):
            raise CheckFailed(f"measured_rate raised {error_text(outcome['error'])} on {name}.")
        got = outcome["value"]
        if type(got) is not float:
            raise CheckFailed("measured_rate should return a number.")
        if abs(got - expected) <= 1e-8 * expected:
            continue
        raise CheckFailed(
            f"on {name}, measured_rate gave {got:.10g}; expected {expected:.10g}."
            + _explain(got, measured_rate_mistakes(arr, skip, expected))
        )


def measured_rate_distances() -> Part:
    """Euclidean distance from every point of a trajectory to the landscape's minimum.

    The expected values are (landscape, trajectory, distances) per run: the trajectories are
    torch.optim.SGD's, run once, when the kit is built."""
    runs = functools.cache(distance_runs)

    def inputs() -> dict[str, Any]:
        return {
            "runs": [
                {
                    "landscape": name,
                    "fields": fields,
                    "path": torch.from_numpy(trajectory.path.copy()),
                    "losses": torch.from_numpy(trajectory.losses.copy()),
                    "diverged_at": trajectory.diverged_at,
                }
                for (name, fields, _), (_, trajectory) in zip(DISTANCE_RUNS, runs(), strict=True)
            ]
        }

    return Part(
        "week02.produce:distances",
        judge_measured_rate_distances,
        inputs=inputs,
        reference=lambda: [
            (
                landscape,
                trajectory,
                np.linalg.norm(trajectory.path - np.asarray(landscape.minimum), axis=1),
            )
            for landscape, trajectory in runs()
        ],
    )


def judge_measured_rate_distances(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`measured_rate_distances`."""
    for (landscape, trajectory, expected), outcome in zip(part.expected, outcomes, strict=True):
        where = f"on the {landscape.name} landscape (minimum at {tuple(landscape.minimum)})"
        if outcome.get("error"):
            raise CheckFailed(
                f"distances_to_minimum raised {error_text(outcome['error'])} {where}."
            )
        value = outcome["value"]
        if not isinstance(value, torch.Tensor) or value.dtype != torch.float64 or value.dim() != 1:
            raise CheckFailed(f"{where}, distances_to_minimum should return numbers.")
        got = value.numpy()
        if got.shape != expected.shape:
            raise CheckFailed(
                f"{where}, a trajectory of {DISTANCE_STEPS} steps has {DISTANCE_STEPS + 1} "
                f"points, so distances_to_minimum should return {DISTANCE_STEPS + 1} distances; "
                f"it returned {got.size}."
            )
        if np.allclose(got, expected, rtol=1e-10, atol=1e-12):
            continue
        message = f"{where}, distances_to_minimum differs from ‖x_k − x*‖."
        for sentence, values in distances_mistakes(trajectory, landscape, expected).items():
            if np.allclose(got, values, rtol=1e-10, atol=1e-12):
                message += f" This looks like a typical mistake: {sentence}"
                break
        raise CheckFailed(message)
