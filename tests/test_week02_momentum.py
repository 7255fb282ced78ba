"""Week 2's grading code on its own: the mistake catalogue, the rate formulas, the fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from course_grading import week02
from course_grading.compare import CheckFailed, first_difference
from course_grading.mistakes import identify, rule_optimizer
from course_grading.optimizer_checks import batches
from course_grading.runs import Case, run_case

from optlab.landscapes import Quadratic
from optlab.trajectories import run_trajectory

CASES = [
    Case("heavy ball", {"lr": 0.05, "momentum": 0.9}),
    Case("dampening", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}),
    Case("weight decay", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05}),
    Case("maximize", {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.1, "maximize": True}),
    Case("nesterov", {"lr": 0.1, "momentum": 0.6, "nesterov": True, "weight_decay": 0.05}),
    Case(
        "groups",
        {"lr": 0.05, "momentum": 0.9},
        groups=({"layers": (0,), "momentum": 0.0}, {"layers": (2, 4), "dampening": 0.5}),
        frozen=(0,),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_week02_momentum_rule_matches_torch(case: Case) -> None:
    rule = rule_optimizer(week02._momentum_rule(), week02.SGD_DEFAULTS)
    expected = run_case(torch.optim.SGD, case, batches())
    assert first_difference(run_case(rule, case, batches()), expected) is None


@pytest.mark.parametrize("mistake", week02.SGD_MOMENTUM_MISTAKES, ids=lambda m: m.id)
def test_week02_momentum_each_mistake_is_caught_and_named(mistake) -> None:
    wrong = rule_optimizer(mistake.rule, week02.SGD_DEFAULTS)
    named = []
    for case in CASES:
        expected = run_case(torch.optim.SGD, case, batches())
        actual = run_case(wrong, case, batches())
        if first_difference(actual, expected) is not None:
            found = identify(
                actual, case, batches(), week02.SGD_MOMENTUM_MISTAKES, week02.SGD_DEFAULTS
            )
            named.append(found)
    assert named, f"{mistake.id} is never caught"
    assert mistake in named, f"{mistake.id} is caught but named as {[m and m.id for m in named]}"


def test_week02_momentum_lr_in_buffer_hint() -> None:
    group = {"lr": 0.1}
    want = torch.tensor([1.0, -2.0])
    assert "lr times" in week02._lr_in_buffer_hint("momentum_buffer", 0.1 * want, want, group)
    assert week02._lr_in_buffer_hint("momentum_buffer", want, 0.5 * want, group) is None


def test_week02_momentum_rate_formulas_match_distill() -> None:
    lr, rate = week02._gd_best([1.0, 100.0])
    assert lr == pytest.approx(2 / 101) and rate == pytest.approx(99 / 101)
    lr, beta, rate = week02._heavy_ball_best([100.0, 1.0])
    assert (lr, beta, rate) == pytest.approx((4 / 121, 81 / 121, 9 / 11))
    assert math.sqrt(beta) == pytest.approx(rate)


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_week02_momentum_rates_are_what_runs_show(kappa: float) -> None:
    """The spectral radius of the heavy ball's step equals the formula; runs converge at it."""
    quadratic = Quadratic(eigenvalues=(1.0, kappa))
    lr, beta, rate = week02._heavy_ball_best(quadratic.eigenvalues)
    radius = 0.0
    for lam in quadratic.eigenvalues:  # (x, z) -> (x - lr (beta z + lam x), beta z + lam x)
        step = np.array([[1 - lr * lam, -lr * beta], [lam, beta]])
        radius = max(radius, np.abs(np.linalg.eigvals(step)).max())
    assert radius == pytest.approx(rate, rel=1e-6)
    gd_lr, gd_rate = week02._gd_best(quadratic.eigenvalues)
    gd = run_trajectory(quadratic, torch.optim.SGD, 200, lr=gd_lr)
    d = np.linalg.norm(gd.path - np.asarray(quadratic.minimum), axis=1)
    assert week02._fit(d, 100) == pytest.approx(gd_rate, rel=1e-9)
    hb = run_trajectory(quadratic, torch.optim.SGD, 400, lr=lr, momentum=beta)
    d = np.linalg.norm(hb.path - np.asarray(quadratic.minimum), axis=1)
    assert rate < week02._fit(d, 200) < rate * 1.01


def test_week02_momentum_best_rates_checks_pass_and_fail() -> None:
    week02.check_best_rates_gd(lambda ev: week02._gd_best(list(map(float, ev))))
    week02.check_best_rates_heavy_ball(lambda ev: week02._heavy_ball_best(list(map(float, ev))))
    with pytest.raises(CheckFailed, match="2/λmax is where"):
        week02.check_best_rates_gd(lambda ev: (2.0 / float(max(ev)), 0.5))

    def rate_is_beta(eigenvalues):
        lr, beta, _ = week02._heavy_ball_best(list(map(float, eigenvalues)))
        return lr, beta, beta

    with pytest.raises(CheckFailed, match="the rate is √β"):
        week02.check_best_rates_heavy_ball(rate_is_beta)


def test_week02_momentum_measured_rate_checks_pass_and_fail() -> None:
    def good(d, skip=0):
        d = np.asarray(d, dtype=float)
        k = np.arange(len(d))
        return math.exp(np.polyfit(k[skip:], np.log(d[skip:]), 1)[0])

    week02.check_measured_rate_fit(good)
    with pytest.raises(CheckFailed, match="the fit should start at step `skip`"):
        week02.check_measured_rate_fit(lambda d, skip=0: good(d))
    with pytest.raises(CheckFailed, match="exp\\(slope\\)"):
        week02.check_measured_rate_fit(lambda d, skip=0: math.log(good(d, skip)))

    def distances(trajectory, landscape):
        return np.linalg.norm(trajectory.path - np.asarray(landscape.minimum), axis=1)

    week02.check_measured_rate_distances(distances)
    with pytest.raises(CheckFailed, match="distances from the origin"):
        week02.check_measured_rate_distances(lambda t, _: np.linalg.norm(t.path, axis=1))
