"""Hidden checks for Week 2: SGD with momentum, and the convergence rates of Distill's article.

Exercise ids (grade ids in the notebook start with them): ``sgd_momentum``, ``best_rates``,
``measured_rate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from course_grading.buffer_checks import (
    check_buffers,
    require_torch_optimizer,
)
from course_grading.compare import CheckFailed
from course_grading.interface_checks import (
    check_closure,
    check_signature,
    check_value_errors,
)
from course_grading.mistakes import Mistake
from course_grading.optimizer_checks import check_against_torch
from course_grading.runs import Case
from course_grading.week01 import SGD_DEFAULTS

# --- sgd_momentum ------------------------------------------------------------------------------


def _momentum_rule(
    dampen_first: bool = False,
    average: bool = False,
    reset: bool = False,
    decay_after_momentum: bool = False,
    maximize_after_momentum: bool = False,
    nesterov_ignored: bool = False,
    nesterov_raw_gradient: bool = False,
    nesterov_without_beta: bool = False,
    lr_in_buffer: bool = False,
) -> Callable:
    """torch.optim.SGD's update, or one typical wrong version of it."""

    def rule(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        wd, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
        d = -g if maximize and not maximize_after_momentum else g.clone()
        if wd != 0 and not decay_after_momentum:
            d = d + wd * p
        if momentum != 0:
            scale = lr if lr_in_buffer else 1.0
            previous = None if reset else state.get("momentum_buffer")
            if previous is None:
                buf = d.clone() * scale * ((1 - dampening) if dampen_first else 1.0)
            else:
                weight = (1 - momentum) if average else (1 - dampening)
                buf = previous * momentum + scale * weight * d
            state["momentum_buffer"] = buf
            if nesterov and not nesterov_ignored:
                if nesterov_raw_gradient:
                    d = (-g if maximize else g) + momentum * buf
                elif nesterov_without_beta:
                    d = d + buf
                else:
                    d = scale * d + momentum * buf
            else:
                d = buf
            if lr_in_buffer:
                lr = 1.0
        if decay_after_momentum and wd != 0:
            d = d + wd * p
        if maximize and maximize_after_momentum:
            d = -d
        p.add_(d, alpha=-lr)

    return rule


SGD_MOMENTUM_MISTAKES = (
    Mistake(
        "sgd_momentum/reset_every_step",
        "the velocity starts afresh at every step (the buffer is not kept in "
        "self.state[p] between steps), so momentum does nothing.",
        _momentum_rule(reset=True),
    ),
    Mistake(
        "sgd_momentum/dampening_first_step",
        "dampening is applied on the first step too; torch starts the buffer with the "
        "gradient itself (buf = g), and dampens only from the second step on.",
        _momentum_rule(dampen_first=True),
    ),
    Mistake(
        "sgd_momentum/average_not_sum",
        "the buffer is an average, β·buf + (1 − β)·g; torch's SGD adds (1 − dampening)·g, the "
        "whole gradient when dampening is 0.",
        _momentum_rule(average=True),
    ),
    Mistake(
        "sgd_momentum/decay_after_momentum",
        "weight decay is added after the momentum buffer; torch adds weight_decay * p to the "
        "gradient first and feeds that sum into the buffer.",
        _momentum_rule(decay_after_momentum=True),
    ),
    Mistake(
        "sgd_momentum/maximize_after_momentum",
        "maximize negates the whole step (weight decay included) instead of the gradient "
        "alone; torch negates the gradient before anything else.",
        _momentum_rule(maximize_after_momentum=True),
    ),
    Mistake(
        "sgd_momentum/nesterov_ignored",
        "nesterov=True is ignored: the step is the heavy-ball one, buf, instead of g + β·buf.",
        _momentum_rule(nesterov_ignored=True),
    ),
    Mistake(
        "sgd_momentum/nesterov_raw_gradient",
        "the Nesterov step adds β·buf to the raw gradient; torch adds it to the gradient "
        "with weight decay included, d = g + λp, stepping along d + β·buf.",
        _momentum_rule(nesterov_raw_gradient=True),
    ),
    Mistake(
        "sgd_momentum/nesterov_without_beta",
        "the Nesterov look-ahead adds the buffer unscaled, g + buf; torch steps along g + β·buf.",
        _momentum_rule(nesterov_without_beta=True),
    ),
)


def _lr_in_buffer_hint(
    key: str, value: torch.Tensor, want: torch.Tensor, group: dict
) -> str | None:
    lr = group.get("lr", 1.0)
    if key == "momentum_buffer" and lr != 1 and torch.allclose(value, lr * want, rtol=1e-6):
        return (
            "the buffer holds lr times torch's velocity (the learning rate is inside the "
            "buffer). The parameters come out the same while lr stays fixed, but the buffer "
            "is not torch's: a checkpoint or a learning-rate schedule gives another run. "
            "Keep buf = β·buf + (1 − dampening)·g and step p -= lr·buf."
        )
    return None


def _check_sgd(SGD: Any, cases: list[Case]) -> None:
    __tracebackhide__ = True
    try:
        check_against_torch(
            SGD, "SGD", "torch.optim.SGD", cases, SGD_MOMENTUM_MISTAKES, SGD_DEFAULTS
        )
    except CheckFailed as failure:
        message = str(failure)
        if "size of tensor" in message or "match the broadcast shape" in message:
            message += (
                " Each parameter needs its own velocity buffer, shaped like it: keep it in "
                "self.state[p]['momentum_buffer'], not one per group or per optimizer."
            )
        raise CheckFailed(message) from None


def check_sgd_momentum_basic(SGD: Any) -> None:
    """Constructor signature, plain SGD, and heavy-ball momentum over many steps."""
    __tracebackhide__ = True
    require_torch_optimizer(SGD, "SGD")
    check_signature(SGD, "SGD", SGD_DEFAULTS, "torch.optim.SGD")
    _check_sgd(
        SGD,
        [
            Case("default arguments"),
            Case("heavy-ball momentum 0.9", {"lr": 0.05, "momentum": 0.9}),
            Case("momentum 0.5 with a large learning rate", {"lr": 0.3, "momentum": 0.5}),
        ],
    )


def check_sgd_momentum_dampening(SGD: Any) -> None:
    """Dampening, weight decay and maximize, combined with momentum."""
    __tracebackhide__ = True
    _check_sgd(
        SGD,
        [
            Case("momentum with dampening 0.5", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}),
            Case("momentum with weight decay", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05}),
            Case(
                "momentum with dampening and weight decay",
                {"lr": 0.1, "momentum": 0.7, "dampening": 0.3, "weight_decay": 0.02},
            ),
            Case(
                "momentum with maximize and weight decay",
                {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.1, "maximize": True},
            ),
        ],
    )


def check_sgd_momentum_nesterov(SGD: Any) -> None:
    """Nesterov momentum, alone and with weight decay and maximize."""
    __tracebackhide__ = True
    _check_sgd(
        SGD,
        [
            Case("Nesterov momentum 0.9", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
            Case(
                "Nesterov momentum with weight decay",
                {"lr": 0.1, "momentum": 0.6, "nesterov": True, "weight_decay": 0.05},
            ),
            Case(
                "Nesterov momentum with maximize",
                {"lr": 0.02, "momentum": 0.9, "nesterov": True, "maximize": True},
            ),
        ],
    )


def check_sgd_momentum_state(SGD: Any) -> None:
    """Frozen parameters, param groups, buffers in self.state, checkpoints, step(closure)."""
    __tracebackhide__ = True
    require_torch_optimizer(SGD, "SGD")
    _check_sgd(
        SGD,
        [
            Case("a frozen first layer with momentum", {"lr": 0.05, "momentum": 0.9}, frozen=(0,)),
            Case(
                "param groups with their own momentum settings",
                {"lr": 0.05, "momentum": 0.9},
                groups=(
                    {"layers": (0,), "momentum": 0.0},
                    {"layers": (2, 4), "lr": 0.1, "dampening": 0.5},
                ),
            ),
        ],
    )
    cases = [
        Case(
            "momentum buffers, in two param groups",
            {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
            steps=16,
            groups=({"layers": (0,), "dampening": 0.2}, {"layers": (2, 4), "nesterov": True}),
        ),
        Case("momentum buffers, a frozen layer", {"lr": 0.1, "momentum": 0.5}, frozen=(2,)),
    ]
    check_buffers(SGD, "SGD", "torch.optim.SGD", cases, stop=8, hint=_lr_in_buffer_hint)
    check_closure(SGD, "SGD", {"lr": 0.1, "momentum": 0.9})


def check_sgd_momentum_validation(SGD: Any) -> None:
    """Invalid hyperparameters raise ValueError naming the parameter, as torch.optim.SGD."""
    __tracebackhide__ = True
    check_value_errors(
        SGD,
        "SGD",
        invalid=[
            ({"lr": -0.01}, ("lr", "learning rate")),
            ({"lr": 0.1, "momentum": -0.5}, ("momentum",)),
            ({"lr": 0.1, "weight_decay": -1e-4}, ("weight_decay", "weight decay")),
            ({"lr": 0.1, "nesterov": True}, ("nesterov",)),
            ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, ("nesterov",)),
        ],
        valid=[
            {"lr": 0.0},
            {"lr": 0.1, "momentum": 0.9, "dampening": 0.5},
            {"lr": 0.1, "momentum": 0.9, "nesterov": True},
            {"lr": 0.1, "momentum": 0.0, "dampening": 0.3},
        ],
    )


# --- best_rates --------------------------------------------------------------------------------

# Eigenvalue sets of the hidden checks: several condition numbers, any order, more than two.
_SPECTRA: tuple[Sequence[float], ...] = (
    (1.0, 10.0),
    (50.0, 0.5),
    (2.0, 3.0),
    (0.01, 1.0),
    (9.0, 1.0, 4.0, 100.0),
    (4.0, 4.0),
)


def _gd_best(eigenvalues: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(eigenvalues), max(eigenvalues)
    kappa = hi / lo
    return 2.0 / (lo + hi), (kappa - 1.0) / (kappa + 1.0)


def _heavy_ball_best(eigenvalues: Sequence[float]) -> tuple[float, float, float]:
    lo, hi = math.sqrt(min(eigenvalues)), math.sqrt(max(eigenvalues))
    root_kappa = hi / lo
    return (
        (2.0 / (lo + hi)) ** 2,
        ((hi - lo) / (hi + lo)) ** 2,
        (root_kappa - 1.0) / (root_kappa + 1.0),
    )


def _call_tuple(fn: Callable, name: str, eigenvalues: Any, size: int) -> list[float]:
    __tracebackhide__ = True
    try:
        out = fn(eigenvalues)
    except Exception as exc:
        raise CheckFailed(
            f"{name}({_spectrum(eigenvalues)}) raised {type(exc).__name__}: {exc}"
        ) from None
    try:
        values = [float(v) for v in out]
    except (TypeError, ValueError):
        values = []
    if len(values) != size:
        raise CheckFailed(
            f"{name} should return a tuple of {size} numbers; for {_spectrum(eigenvalues)} it "
            f"returned {out!r:.120}."
        )
    return values


def _spectrum(eigenvalues: Any) -> str:
    return "eigenvalues " + ", ".join(f"{float(v):g}" for v in eigenvalues)


def _close(a: float, b: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _explain(got: float, hints: dict[str, float]) -> str:
    for sentence, value in hints.items():
        if _close(got, value):
            return f" This looks like a typical mistake: {sentence}"
    return ""


def check_best_rates_gd(gd_best: Callable) -> None:
    """The best gradient-descent step size 2/(λ1+λn) and its rate (κ−1)/(κ+1)."""
    __tracebackhide__ = True
    for i, spectrum in enumerate(_SPECTRA):
        arg = torch.tensor(spectrum, dtype=torch.float64) if i % 2 else list(spectrum)
        lr, rate = _call_tuple(gd_best, "gd_best", arg, 2)
        want_lr, want_rate = _gd_best(spectrum)
        lo, hi = min(spectrum), max(spectrum)
        kappa = hi / lo
        if not _close(lr, want_lr):
            raise CheckFailed(
                f"for {_spectrum(spectrum)}, gd_best's step size is {lr:.10g}; expected "
                f"{want_lr:.10g}."
                + _explain(
                    lr,
                    {
                        "2/λmax is where gradient descent starts to diverge, not its best step "
                        "size; the best one balances the slowest and the fastest direction: "
                        "2/(λ1 + λn).": 2.0 / hi,
                        "1/λmax is best for the steepest direction alone; the best step size "
                        "balances both ends: 2/(λ1 + λn).": 1.0 / hi,
                        "1/λ1 diverges along the steep direction.": 1.0 / lo,
                    },
                )
            )
        if not _close(rate, want_rate):
            raise CheckFailed(
                f"for {_spectrum(spectrum)}, gd_best's rate is {rate:.10g}; expected "
                f"{want_rate:.10g}."
                + _explain(
                    rate,
                    {
                        "(√κ − 1)/(√κ + 1) is the heavy ball's rate, not gradient "
                        "descent's.": _heavy_ball_best(spectrum)[2],
                        "1 − 1/κ is the rate at step size 1/λn, not at the best one.": 1
                        - 1 / kappa,
                        "κ is λn/λ1, the largest eigenvalue over the smallest.": (1 / kappa - 1)
                        / (1 / kappa + 1),
                    },
                )
            )


def check_best_rates_heavy_ball(heavy_ball_best: Callable) -> None:
    """The best heavy-ball step size α, momentum β and rate (√κ−1)/(√κ+1)."""
    __tracebackhide__ = True
    for i, spectrum in enumerate(_SPECTRA):
        arg = list(spectrum) if i % 2 else torch.tensor(spectrum, dtype=torch.float64)
        got = _call_tuple(heavy_ball_best, "heavy_ball_best", arg, 3)
        want = _heavy_ball_best(spectrum)
        lo, hi = math.sqrt(min(spectrum)), math.sqrt(max(spectrum))
        hints = (
            {
                "the step size is (2/(√λ1 + √λn))², squared.": 2.0 / (lo + hi),
                "2/(λ1 + λn) is gradient descent's best step size; the heavy ball's is "
                "(2/(√λ1 + √λn))².": _gd_best(spectrum)[0],
            },
            {
                "the momentum is ((√λn − √λ1)/(√λn + √λ1))², squared: β is the rate squared.": (
                    hi - lo
                )
                / (hi + lo),
            },
            {
                "the rate is √β, (√κ − 1)/(√κ + 1), not β itself.": want[1],
                "(κ − 1)/(κ + 1) is gradient descent's rate.": _gd_best(spectrum)[1],
            },
        )
        for name, value, expected, hint in zip(
            ("step size", "momentum", "rate"), got, want, hints, strict=True
        ):
            if not _close(value, expected):
                raise CheckFailed(
                    f"for {_spectrum(spectrum)}, heavy_ball_best's {name} is {value:.10g}; "
                    f"expected {expected:.10g}." + _explain(value, hint)
                )


# --- measured_rate -----------------------------------------------------------------------------


def _fit(distances: np.ndarray, skip: int) -> float:
    steps = np.arange(len(distances))[skip:]
    return math.exp(np.polyfit(steps, np.log(distances[skip:]), 1)[0])


def _sequences() -> list[tuple[str, Any, int]]:
    k = np.arange(41, dtype=np.float64)
    rng = np.random.default_rng(3)
    return [
        ("a geometric sequence", 3.0 * 0.9 ** k[:31], 0),
        ("a sequence that zig-zags around a geometric one", 5 * 0.7**k * (1 + 0.3 * (-1) ** k), 0),
        ("a Python list", [2.0 * 0.5**i for i in range(20)], 0),
        ("a slow and a fast part, skip=10", 0.95**k + 10.0 * 0.5**k, 10),
        ("a noisy sequence, skip=5", 0.8**k * np.exp(0.2 * rng.standard_normal(k.size)), 5),
        ("a sequence with a transient, skip=20", (1 + k) * 0.6**k, 20),
    ]


def check_measured_rate_fit(measured_rate: Callable) -> None:
    """exp of the least-squares slope of log(distance) against the step, from step `skip` on."""
    __tracebackhide__ = True
    for name, distances, skip in _sequences():
        arr = np.asarray(distances, dtype=np.float64)
        expected = _fit(arr, skip)
        arg = list(distances) if isinstance(distances, list) else arr.copy()
        try:
            got = float(measured_rate(arg, skip=skip) if skip else measured_rate(arg))
        except Exception as exc:
            raise CheckFailed(
                f"measured_rate raised {type(exc).__name__}: {exc} on {name}."
            ) from None
        if abs(got - expected) <= 1e-8 * expected:
            continue
        n = len(arr) - 1
        hints = {
            "that is the slope of the fitted line; the rate per step is exp(slope).": math.log(
                expected
            ),
            "that is the ratio of the last two distances; fit a line through all the "
            "steps from `skip` on.": arr[-1] / arr[-2],
            "that is (d_last / d_skip)^(1/steps), from two points only; fit a least-squares "
            "line through all of them.": (arr[-1] / arr[skip]) ** (1 / (n - skip)),
            "the fit should start at step `skip` (and keep the true step numbers).": _fit(arr, 0),
            "use the natural logarithm with exp (or log10 with 10**): the two must match.": 10
            ** math.log(expected),
        }
        raise CheckFailed(
            f"on {name}, measured_rate gave {got:.10g}; expected {expected:.10g}."
            + _explain(got, hints)
        )


def check_measured_rate_distances(distances_to_minimum: Callable) -> None:
    """Euclidean distance from every point of a trajectory to the landscape's minimum."""
    __tracebackhide__ = True
    from optlab.landscapes import DipCurve, Quadratic, Rosenbrock
    from optlab.trajectories import run_trajectory

    runs = (
        (Quadratic(eigenvalues=(1.0, 30.0), minimum=(1.0, -0.5), angle=0.4), {"lr": 0.05}),
        (Rosenbrock(), {"lr": 1e-3, "momentum": 0.9}),
        (DipCurve(), {"lr": 0.1, "momentum": 0.9}),
    )
    for landscape, hyper in runs:
        traj = run_trajectory(landscape, torch.optim.SGD, 40, **hyper)
        minimum = np.asarray(landscape.minimum)
        expected = np.linalg.norm(traj.path - minimum, axis=1)
        where = f"on the {landscape.name} landscape (minimum at {tuple(landscape.minimum)})"
        try:
            got = np.asarray(distances_to_minimum(traj, landscape), dtype=np.float64).reshape(-1)
        except Exception as exc:
            raise CheckFailed(
                f"distances_to_minimum raised {type(exc).__name__}: {exc} {where}."
            ) from None
        if got.shape != expected.shape:
            raise CheckFailed(
                f"{where}, a trajectory of 40 steps has 41 points, so distances_to_minimum "
                f"should return 41 distances; it returned {got.size}."
            )
        if np.allclose(got, expected, rtol=1e-10, atol=1e-12):
            continue
        hints = {
            "these are squared distances; take the square root.": expected**2,
            "these are distances from the origin; measure from landscape.minimum.": (
                np.linalg.norm(traj.path, axis=1)
            ),
            "these are loss gaps; the exercise asks for distances in parameter space.": (
                traj.losses - landscape.minimum_loss
            ),
        }
        message = f"{where}, distances_to_minimum differs from ‖x_k − x*‖."
        for sentence, value in hints.items():
            if np.allclose(got, value, rtol=1e-10, atol=1e-12):
                message += f" This looks like a typical mistake: {sentence}"
                break
        raise CheckFailed(message)
