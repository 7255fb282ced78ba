"""Trusted side: Week 1's cases, the runs of the student's SGD against torch.optim.SGD."""

from __future__ import annotations

from course_grading.core.runs import Case
from course_grading.core.tables import CaseTable

# The runs against torch.optim.SGD, per test cell of ``sgd_step``.
SGD_STEP_CASES: CaseTable = {
    "sgd_step_test_basic": (
        Case("default arguments"),
        Case("a large learning rate", {"lr": 0.3}),
    ),
    "sgd_step_test_weight_decay": (
        Case("weight decay", {"lr": 0.1, "weight_decay": 0.05}),
        Case("maximize", {"lr": 0.02, "maximize": True}),
        Case("maximize with weight decay", {"lr": 0.02, "weight_decay": 0.1, "maximize": True}),
    ),
    "sgd_step_test_groups_frozen": (
        Case("a frozen first layer", {"lr": 0.1, "weight_decay": 0.01}, frozen=(0,)),
        Case(
            "param groups with their own lr and weight decay",
            {"lr": 0.05},
            groups=({"layers": (0,), "lr": 0.2}, {"layers": (2, 4), "weight_decay": 0.1}),
        ),
    ),
}
