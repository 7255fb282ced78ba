"""Trusted side: typical wrong update rules, run so that a failing check can name the mistake.

Each :class:`Mistake` builds an optimizer class that makes exactly one typical error. When a
submission's run matches one of them step for step, the feedback names that mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from course_grading.core.compare import first_difference
from course_grading.core.runs import Case, Snapshots, run_case

# rule(param, grad, state, group): update ``param`` in place from its gradient.
Rule = Callable[[torch.Tensor, torch.Tensor, dict, dict], None]


@dataclass(frozen=True)
class Mistake:
    """A typical wrong version of an update: its id, a one-sentence explanation, its rule."""

    id: str
    sentence: str
    rule: Rule


def rule_optimizer(rule: Rule, defaults: dict[str, Any]) -> type[torch.optim.Optimizer]:
    """An optimizer class that applies ``rule`` to every parameter that has a gradient."""

    class RuleOptimizer(torch.optim.Optimizer):
        def __init__(self, params: Any, **kwargs: Any) -> None:
            super().__init__(params, {**defaults, **kwargs})

        @torch.no_grad()
        def step(self, closure: Callable[[], Any] | None = None) -> Any:
            loss = closure() if closure is not None else None
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        rule(p, p.grad, self.state[p], group)
            return loss

    return RuleOptimizer


def identify(
    student: Snapshots,
    case: Case,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    mistakes: Sequence[Mistake],
    defaults: dict[str, Any],
) -> Mistake | None:
    """The first mistake whose run on ``case`` matches the student's run, if any."""
    for mistake in mistakes:
        try:
            wrong = run_case(rule_optimizer(mistake.rule, defaults), case, batches)
        except Exception:  # a rule that cannot run this case cannot be the explanation
            continue
        if first_difference(student, wrong) is None:
            return mistake
    return None
