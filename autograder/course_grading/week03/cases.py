"""Trusted side: Week 3's cases, the runs of the student's RMSprop against torch.optim.RMSprop."""

from __future__ import annotations

from course_grading.core.runs import Case
from course_grading.core.tables import CaseTable, frozen_and_grouped

# The runs against torch.optim.RMSprop, per test cell of ``rmsprop_step``.
RMSPROP_STEP_CASES: CaseTable = {
    "rmsprop_step_test_basic": (
        Case("default arguments"),
        Case("a small alpha", {"lr": 0.003, "alpha": 0.9}),
        Case("a large eps", {"lr": 0.01, "eps": 0.01}),
    ),
    "rmsprop_step_test_weight_decay": (
        Case("weight decay", {"lr": 0.005, "weight_decay": 0.1}),
        Case("maximize", {"lr": 0.002, "maximize": True}),
        Case("maximize with weight decay", {"lr": 0.002, "weight_decay": 0.05, "maximize": True}),
    ),
    "rmsprop_step_test_momentum": (
        Case("momentum 0.9", {"lr": 0.001, "momentum": 0.9}),
        Case(
            "momentum with weight decay and a small alpha",
            {"lr": 0.002, "momentum": 0.5, "weight_decay": 0.01, "alpha": 0.9},
        ),
    ),
    "rmsprop_step_test_centered": (
        Case("centered", {"lr": 0.003, "centered": True, "alpha": 0.9}),
        Case(
            "centered with momentum",
            {"lr": 0.001, "centered": True, "momentum": 0.9, "alpha": 0.9},
        ),
        Case(
            "centered with the default alpha, weight decay and maximize",
            {"lr": 0.002, "centered": True, "weight_decay": 0.05, "maximize": True},
        ),
    ),
    "rmsprop_step_test_state": frozen_and_grouped(
        frozen={"lr": 0.005, "momentum": 0.5},
        grouped={"lr": 0.003},
        first={"alpha": 0.9, "centered": True},
        rest={"lr": 0.001, "momentum": 0.8, "weight_decay": 0.01},
    ),
}
# The runs whose buffers are compared with torch's after BUFFER_STOP steps.
BUFFER_CASES = (
    Case(
        "RMSprop buffers, in two param groups",
        {"lr": 0.002, "momentum": 0.9},
        steps=16,
        groups=({"layers": (0,), "centered": True}, {"layers": (2, 4), "alpha": 0.9}),
    ),
    Case("RMSprop buffers, a frozen layer", {"lr": 0.003}, frozen=(2,)),
)
BUFFER_STOP = 8

# rmsprop_step_test_validation: keywords the constructor must refuse (with the names one of
# which its ValueError must mention), and keywords it must accept.
RMSPROP_INVALID = (
    ({"lr": -0.01}, ("lr", "learning rate")),
    ({"lr": 0.01, "alpha": -0.5}, ("alpha",)),
    ({"lr": 0.01, "eps": -1e-8}, ("eps", "epsilon")),
    ({"lr": 0.01, "weight_decay": -1e-4}, ("weight_decay", "weight decay")),
    ({"lr": 0.01, "momentum": -0.9}, ("momentum",)),
)
RMSPROP_VALID = (
    {"lr": 0.0},
    {"lr": 0.01, "alpha": 0.0, "eps": 0.0},
    {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1},
)
