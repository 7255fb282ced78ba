"""Trusted side: Week 1's hidden checks, by test cell.

Exercise ids (grade ids in the notebook start with them): ``max_stable_lr``,
``optimizer_interface``, ``sgd_step``, ``minibatches``. Week 1 hides every ``torch.optim``
optimizer from the sandbox: the SGD must be the student's own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import BatchSampler, RandomSampler

from course_grading.core.checks import CheckFailed, Checks, Part, error_text
from course_grading.core.interface import closure, judge_value_error, value_errors
from course_grading.core.optimizers import OptimizerSpec
from course_grading.core.references import TORCH_DEFAULTS
from course_grading.core.tables import optimizer_cells
from course_grading.core.torch_hiding import TORCH_OPTIMIZERS
from course_grading.week01.cases import SGD_STEP_CASES
from course_grading.week01.mistakes import MAX_STABLE_LR_MISTAKES, SGD_STEP_MISTAKES

HIDDEN_TORCH = TORCH_OPTIMIZERS

SGD = OptimizerSpec.of("SGD", SGD_STEP_MISTAKES)
# The constructor keywords Week 1 asks for, with torch.optim.SGD's defaults.
SGD_KEYWORDS = {name: TORCH_DEFAULTS["SGD"][name] for name in ("lr", "weight_decay", "maximize")}


def checks() -> Checks:
    """Every test cell's hidden check."""
    return {
        "max_stable_lr_test": [max_stable_lr()],
        "optimizer_interface_test": [optimizer_interface()],
        **optimizer_cells(
            SGD,
            SGD_STEP_CASES,
            keywords=SGD_KEYWORDS,
            then={
                # lr 0.1 on the gradient [2, -4] of (p**2).sum() at p = [1, -2]
                "sgd_step_test_groups_frozen": [closure("SGD", {"lr": 0.1}, expected=(0.8, -1.6))]
            },
        ),
        "sgd_step_test_validation": [
            value_errors(
                "SGD",
                invalid=[
                    ({"lr": -0.01}, ("lr", "learning rate")),
                    ({"lr": 0.1, "weight_decay": -1e-4}, ("weight_decay", "weight decay")),
                ],
                valid=[{"lr": 0.0}, {"lr": 0.1, "weight_decay": 0.0}],
            )
        ],
        "minibatches_test": [minibatches()],
    }


# --- max_stable_lr -----------------------------------------------------------------------------


def max_stable_lr() -> Part:
    """2 / largest eigenvalue, for several symmetric positive definite matrices."""
    g = torch.Generator().manual_seed(7)
    hessians = []
    for n in (2, 3, 5, 8):
        a = torch.randn(n, n, generator=g, dtype=torch.float64)
        hessians.append(a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64))
    return Part(
        "core.produce:calls",
        judge_max_stable_lr,
        inputs={"calls": [{"args": [h]} for h in hessians]},
        reference=lambda: [2.0 / float(torch.linalg.eigvalsh(h).max()) for h in hessians],
        context={"hessians": hessians},
    )


def judge_max_stable_lr(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`max_stable_lr`."""
    for hessian, expected, outcome in zip(
        part.context["hessians"], part.expected, outcomes, strict=True
    ):
        n = len(hessian)
        if outcome.get("error"):
            raise CheckFailed(
                f"max_stable_lr raised {error_text(outcome['error'])} for a {n}x{n} Hessian."
            )
        got = _float(outcome["value"], "max_stable_lr")
        if abs(got - expected) <= 1e-9 * expected:
            continue
        message = f"for a {n}x{n} Hessian, max_stable_lr gave {got:.6g}; expected {expected:.6g}."
        for wrong, hint in MAX_STABLE_LR_MISTAKES:
            value = wrong(hessian)
            if abs(got - value) <= 1e-9 * abs(value):
                message += f" This looks like a typical mistake: {hint}"
        raise CheckFailed(message)


def _float(value: Any, answer: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise CheckFailed(f"{answer} should return a number.")


# --- optimizer_interface -----------------------------------------------------------------------

_CONSTRUCTIONS = (
    {"seed": 0, "groups": None, "defaults": {"lr": 0.5, "weight_decay": 0.0}},
    {
        "seed": 0,
        "groups": [{"layers": [0], "lr": 0.1}, {"layers": [2]}],
        "defaults": {"lr": 0.5, "weight_decay": 0.25},
    },
)
# What param_groups must hold after each construction (besides the very same tensors).
_EXPECTED_GROUPS = (
    ("a generator", [{"lr": 0.5, "weight_decay": 0.0}]),
    (
        "a list of param-group dicts",
        [{"lr": 0.1, "weight_decay": 0.25}, {"lr": 0.5, "weight_decay": 0.25}],
    ),
)


def optimizer_interface() -> Part:
    """Param groups built like torch.optim.Optimizer's, and zero_grad in both modes."""
    return Part(
        "week01.produce:optimizer_interface",
        judge_optimizer_interface,
        inputs={"constructions": list(_CONSTRUCTIONS), "empty": {"lr": 0.1}},
    )


def judge_optimizer_interface(part: Part, seen: dict[str, Any]) -> None:
    """See :func:`optimizer_interface`."""
    for i, ((given, want), got) in enumerate(
        zip(_EXPECTED_GROUPS, seen["constructions"], strict=False)
    ):
        if "error" in got:
            raise CheckFailed(f"Optimizer(params, defaults) raised {error_text(got['error'])}")
        _judge_groups(got, want, given)
        if i == 0 and not got["has_state"]:
            raise CheckFailed("your Optimizer has no `state` attribute (a dict, per parameter).")
    if len(seen["constructions"]) != len(_EXPECTED_GROUPS):
        raise CheckFailed("the param-group check did not run to the end.")
    judge_value_error("an empty parameter list", seen["empty_error"])
    for set_to_none, found in zip((True, False), seen["zero_grad"], strict=True):
        _judge_zero_grad(found, set_to_none)


def _judge_groups(got: dict[str, Any], want: list[dict[str, Any]], given: str) -> None:
    if not got["is_list"] or got["length"] != len(want):
        raise CheckFailed(
            f"given {given}, param_groups should be a list of {len(want)} dict(s); "
            f"got {got['repr']}."
        )
    for i, (group, values) in enumerate(zip(got["groups"], want, strict=True)):
        keys = sorted(["params", *values])
        if not group["is_dict"] or group["keys"] != keys:
            shown = group["keys"] if group["is_dict"] else group["text"]
            raise CheckFailed(
                f"given {given}, param group {i} should have the keys {keys}; got {shown}."
            )
        if not group["same_params"]:
            raise CheckFailed(
                f"given {given}, param group {i}['params'] should be a list of the very same "
                "tensors, in order (not copies)."
            )
        for key, value in values.items():
            if group["values"][key] != value:
                raise CheckFailed(
                    f"given {given}, param group {i}['{key}'] should be {value!r} "
                    f"but is {group['reprs'][key]} (a group's own value wins over the defaults)."
                )


def _judge_zero_grad(found: dict[str, Any], set_to_none: bool) -> None:
    if "construct_error" in found:
        raise CheckFailed(
            f"Optimizer(params, defaults) raised {error_text(found['construct_error'])}"
        )
    if "error" in found:
        raise CheckFailed(f"zero_grad raised {error_text(found['error'])}")
    for p in found["params"]:
        name = p["name"]
        if not p["had_grad"]:
            if not p["grad_is_none"]:
                raise CheckFailed(f"zero_grad gave '{name}', which had no gradient, one.")
        elif set_to_none and not p["grad_is_none"]:
            raise CheckFailed(
                f"zero_grad() should set every .grad to None by default; '{name}'.grad "
                "is still a tensor."
            )
        elif not set_to_none and (not p["same_tensor"] or not p["all_zero"]):
            raise CheckFailed(
                f"zero_grad(set_to_none=False) should fill '{name}'.grad with zeros in "
                "place (the same tensor, now all zeros)."
            )


# --- minibatches -------------------------------------------------------------------------------

_EPOCHS = ((100, 32, 0), (64, 16, 3), (10, 32, 5), (33, 1, 2))


def minibatches() -> Part:
    """Same batches, in the same order, as torch's RandomSampler + BatchSampler."""
    cases = [
        {
            "X": torch.arange(n * 3, dtype=torch.float64).reshape(n, 3),
            "y": torch.arange(n) * 10,
            "batch_size": batch_size,
            "seed": seed,
        }
        for n, batch_size, seed in _EPOCHS
    ]

    def reference() -> list[list[list[int]]]:
        return [
            list(
                BatchSampler(
                    RandomSampler(range(n), generator=torch.Generator().manual_seed(seed)),
                    batch_size,
                    drop_last=False,
                )
            )
            for n, batch_size, seed in _EPOCHS
        ]

    return Part(
        "week01.produce:epochs", judge_minibatches, inputs={"cases": cases}, reference=reference
    )


def judge_minibatches(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`minibatches`."""
    for (n, batch_size, _), want, outcome in zip(_EPOCHS, part.expected, outcomes, strict=True):
        if outcome.get("error"):
            raise CheckFailed(f"minibatches raised {error_text(outcome['error'])}")
        _judge_epoch(outcome["batches"], want, n, batch_size)


def _judge_epoch(got: list, want: list, n: int, batch_size: int) -> None:
    where = f"with {n} samples and batch_size={batch_size}"
    try:
        rows = [(xb, yb) for xb, yb in got]
    except (TypeError, ValueError):
        raise CheckFailed(f"{where}, each batch should be a pair (X_batch, y_batch).") from None
    seen = []
    for xb, yb in rows:
        if not isinstance(xb, torch.Tensor) or not isinstance(yb, torch.Tensor):
            raise CheckFailed(f"{where}, batches should hold tensors.")
        if len(xb) != len(yb) or not torch.equal(xb[:, 0].long() // 3 * 10, yb):
            raise CheckFailed(f"{where}, the features and labels of a batch no longer match.")
        seen.extend((xb[:, 0].long() // 3).tolist())
    sizes = [len(xb) for xb, _ in rows]
    want_sizes = [len(b) for b in want]
    if sorted(seen) != list(range(n)):
        if len(seen) < n and sizes == want_sizes[:-1]:
            raise CheckFailed(f"{where}, the last, smaller batch is missing: keep it.")
        raise CheckFailed(
            f"{where}, an epoch should contain every sample exactly once; {len(seen)} samples "
            f"were returned, {len(set(seen))} of them different."
        )
    if sizes != want_sizes:
        raise CheckFailed(f"{where}, batch sizes should be {want_sizes}, got {sizes}.")
    order = [i for b in want for i in b]
    if seen != order:
        hint = (
            " The batches come in the data's original order: shuffle them."
            if seen == list(range(n))
            else " Draw the order with torch.randperm(len(X), generator=generator)."
        )
        raise CheckFailed(
            f"{where}, the samples come in a different order than torch's RandomSampler with "
            f"the same generator.{hint}"
        )
