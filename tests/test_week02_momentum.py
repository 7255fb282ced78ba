"""Week 2's grading code on its own: the mistake catalogue, the rate formulas, the fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from course_grading.core.compare import first_difference
from course_grading.core.local import run_check
from course_grading.core.mistakes import identify, rule_optimizer
from course_grading.core.references import TORCH_DEFAULTS, digit_batches
from course_grading.core.runs import Case, run_case
from course_grading.week02 import cases, mistakes

from optlab.landscapes import Quadratic
from optlab.trajectories import run_trajectory

WEEK = "week02_momentum"


def assert_fails(grade_id: str, answer, phrase: str) -> None:
    """The hidden check of ``grade_id`` fails on ``answer``, with ``phrase`` in its message."""
    message = run_check(WEEK, grade_id, answer)
    assert message is not None and phrase in message, message


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
    rule = rule_optimizer(mistakes.momentum_rule(), TORCH_DEFAULTS["SGD"])
    expected = run_case(torch.optim.SGD, case, digit_batches())
    assert first_difference(run_case(rule, case, digit_batches()), expected) is None


@pytest.mark.parametrize("mistake", mistakes.SGD_MOMENTUM_MISTAKES, ids=lambda m: m.id)
def test_week02_momentum_each_mistake_is_caught_and_named(mistake) -> None:
    wrong = rule_optimizer(mistake.rule, TORCH_DEFAULTS["SGD"])
    named = []
    for case in CASES:
        expected = run_case(torch.optim.SGD, case, digit_batches())
        actual = run_case(wrong, case, digit_batches())
        if first_difference(actual, expected) is not None:
            found = identify(
                actual, case, digit_batches(), mistakes.SGD_MOMENTUM_MISTAKES, TORCH_DEFAULTS["SGD"]
            )
            named.append(found)
    assert named, f"{mistake.id} is never caught"
    assert mistake in named, f"{mistake.id} is caught but named as {[m and m.id for m in named]}"


def test_week02_momentum_lr_in_buffer_hint() -> None:
    group = {"lr": 0.1}
    want = torch.tensor([1.0, -2.0])
    assert "lr times" in mistakes.lr_in_buffer_hint("momentum_buffer", 0.1 * want, want, group)
    assert mistakes.lr_in_buffer_hint("momentum_buffer", want, 0.5 * want, group) is None


def test_week02_momentum_rate_formulas_match_distill() -> None:
    lr, rate = cases.gd_best([1.0, 100.0])
    assert lr == pytest.approx(2 / 101) and rate == pytest.approx(99 / 101)
    lr, beta, rate = cases.heavy_ball_best([100.0, 1.0])
    assert (lr, beta, rate) == pytest.approx((4 / 121, 81 / 121, 9 / 11))
    assert math.sqrt(beta) == pytest.approx(rate)


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_week02_momentum_rates_are_what_runs_show(kappa: float) -> None:
    """The spectral radius of the heavy ball's step equals the formula; runs converge at it."""
    quadratic = Quadratic(eigenvalues=(1.0, kappa))
    lr, beta, rate = cases.heavy_ball_best(quadratic.eigenvalues)
    radius = 0.0
    for lam in quadratic.eigenvalues:  # (x, z) -> (x - lr (beta z + lam x), beta z + lam x)
        step = np.array([[1 - lr * lam, -lr * beta], [lam, beta]])
        radius = max(radius, np.abs(np.linalg.eigvals(step)).max())
    assert radius == pytest.approx(rate, rel=1e-6)
    gd_lr, gd_rate = cases.gd_best(quadratic.eigenvalues)
    gd = run_trajectory(quadratic, torch.optim.SGD, 200, lr=gd_lr)
    d = np.linalg.norm(gd.path - np.asarray(quadratic.minimum), axis=1)
    assert cases.fit(d, 100) == pytest.approx(gd_rate, rel=1e-9)
    hb = run_trajectory(quadratic, torch.optim.SGD, 400, lr=lr, momentum=beta)
    d = np.linalg.norm(hb.path - np.asarray(quadratic.minimum), axis=1)
    assert rate < cases.fit(d, 200) < rate * 1.01


def test_week02_momentum_best_rates_checks_pass_and_fail() -> None:
    assert (
        run_check(WEEK, "best_rates_test_gd", lambda ev: cases.gd_best(list(map(float, ev))))
        is None
    )
    assert (
        run_check(
            WEEK,
            "best_rates_test_heavy_ball",
            lambda ev: cases.heavy_ball_best(list(map(float, ev))),
        )
        is None
    )
    assert_fails("best_rates_test_gd", lambda ev: (2.0 / float(max(ev)), 0.5), "2/λmax is where")

    def rate_is_beta(eigenvalues):
        lr, beta, _ = cases.heavy_ball_best(list(map(float, eigenvalues)))
        return lr, beta, beta

    assert_fails("best_rates_test_heavy_ball", rate_is_beta, "the rate is √β")


def test_week02_momentum_measured_rate_checks_pass_and_fail() -> None:
    def good(d, skip=0):
        d = np.asarray(d, dtype=float)
        k = np.arange(len(d))
        return math.exp(np.polyfit(k[skip:], np.log(d[skip:]), 1)[0])

    assert run_check(WEEK, "measured_rate_test_fit", good) is None
    assert_fails(
        "measured_rate_test_fit", lambda d, skip=0: good(d), "the fit should start at step `skip`"
    )
    assert_fails("measured_rate_test_fit", lambda d, skip=0: math.log(good(d, skip)), "exp(slope)")

    def distances(trajectory, landscape):
        return np.linalg.norm(trajectory.path - np.asarray(landscape.minimum), axis=1)

    assert run_check(WEEK, "measured_rate_test_distances", distances) is None
    assert_fails(
        "measured_rate_test_distances",
        lambda t, _: np.linalg.norm(t.path, axis=1),
        "distances from the origin",
    )
