"""Week 3's grading code on its own: the RMSprop rule, its mistake catalogue, square_average."""

from __future__ import annotations

import pytest
import torch
from course_grading.core.compare import first_difference
from course_grading.core.local import run_check
from course_grading.core.mistakes import identify, rule_optimizer
from course_grading.core.references import TORCH_DEFAULTS, digit_batches
from course_grading.core.runs import Case, run_case
from course_grading.week03 import mistakes
from course_grading.week03.mistakes import RMSPROP_STEP_MISTAKES, square_averages

RMSPROP_DEFAULTS = TORCH_DEFAULTS["RMSprop"]

CASES = [
    Case("defaults"),
    Case("large eps", {"lr": 0.01, "eps": 0.01}),
    Case("weight decay", {"lr": 0.005, "weight_decay": 0.1}),
    Case("maximize", {"lr": 0.002, "weight_decay": 0.05, "maximize": True}),
    Case("momentum", {"lr": 0.001, "momentum": 0.9}),
    Case("centered", {"lr": 0.001, "centered": True, "momentum": 0.9, "alpha": 0.9}),
    Case("centered alone", {"lr": 0.003, "centered": True, "alpha": 0.9}),
    Case(
        "groups",
        {"lr": 0.003},
        groups=({"layers": (0,), "centered": True}, {"layers": (2, 4), "momentum": 0.8}),
        frozen=(0,),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_week03_rmsprop_rule_matches_torch(case: Case) -> None:
    rule = rule_optimizer(mistakes._rmsprop_rule(), RMSPROP_DEFAULTS)
    expected = run_case(torch.optim.RMSprop, case, digit_batches())
    assert first_difference(run_case(rule, case, digit_batches()), expected) is None


@pytest.mark.parametrize("mistake", RMSPROP_STEP_MISTAKES, ids=lambda m: m.id)
def test_week03_rmsprop_each_mistake_is_caught_and_named(mistake) -> None:
    wrong = rule_optimizer(mistake.rule, RMSPROP_DEFAULTS)
    named = []
    for case in CASES:
        expected = run_case(torch.optim.RMSprop, case, digit_batches())
        actual = run_case(wrong, case, digit_batches())
        if first_difference(actual, expected) is not None:
            named.append(
                identify(actual, case, digit_batches(), RMSPROP_STEP_MISTAKES, RMSPROP_DEFAULTS)
            )
    assert named, f"{mistake.id} is never caught"
    assert mistake in named, f"{mistake.id} is caught but named as {[m and m.id for m in named]}"


def _square_average_check(square_average) -> str | None:
    return run_check("week03_rmsprop", "square_average_test", square_average)


def test_week03_rmsprop_square_average_check_passes_and_names_mistakes() -> None:
    assert _square_average_check(square_averages) is None
    assert "swapped" in _square_average_check(
        lambda grads, alpha: square_averages(grads, 1 - alpha)
    )
    assert "starts at the first g²" in _square_average_check(mistakes._square_averages_from_first)
    assert "should return 6 averages" in _square_average_check(
        lambda grads, alpha: square_averages(grads, alpha)[:1]
    )
