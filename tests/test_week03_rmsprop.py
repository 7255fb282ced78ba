"""Week 3's grading code on its own: the RMSprop rule, its mistake catalogue, square_average."""

from __future__ import annotations

import pytest
import torch
from course_grading import week03
from course_grading.compare import CheckFailed, first_difference
from course_grading.mistakes import identify, rule_optimizer
from course_grading.optimizer_checks import batches
from course_grading.runs import Case, run_case

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
    rule = rule_optimizer(week03._rmsprop_rule(), week03.RMSPROP_DEFAULTS)
    expected = run_case(torch.optim.RMSprop, case, batches())
    assert first_difference(run_case(rule, case, batches()), expected) is None


@pytest.mark.parametrize("mistake", week03.RMSPROP_STEP_MISTAKES, ids=lambda m: m.id)
def test_week03_rmsprop_each_mistake_is_caught_and_named(mistake) -> None:
    wrong = rule_optimizer(mistake.rule, week03.RMSPROP_DEFAULTS)
    named = []
    for case in CASES:
        expected = run_case(torch.optim.RMSprop, case, batches())
        actual = run_case(wrong, case, batches())
        if first_difference(actual, expected) is not None:
            named.append(
                identify(
                    actual, case, batches(), week03.RMSPROP_STEP_MISTAKES, week03.RMSPROP_DEFAULTS
                )
            )
    assert named, f"{mistake.id} is never caught"
    assert mistake in named, f"{mistake.id} is caught but named as {[m and m.id for m in named]}"


def test_week03_rmsprop_square_average_check_passes_and_names_mistakes() -> None:
    week03.check_square_average(week03._square_averages)
    with pytest.raises(CheckFailed, match="swapped"):
        week03.check_square_average(lambda grads, alpha: week03._square_averages(grads, 1 - alpha))
    with pytest.raises(CheckFailed, match="starts at the first g²"):
        week03.check_square_average(week03._square_averages_from_first)
    with pytest.raises(CheckFailed, match="should return 6 averages"):
        week03.check_square_average(lambda grads, alpha: week03._square_averages(grads, alpha)[:1])
