"""Trusted side: judges of an answer's interface that every week shares.

A student optimizer is a class of its own (not ``torch.optim``'s), takes the keywords of the
``torch.optim`` class it imitates with the same defaults, rejects invalid values with a
``ValueError`` that names the parameter, and supports ``step(closure)``. The producers in
:mod:`course_grading.core.produce` observe the student's code; the functions here turn the
observations into a pass or a message, and build the :class:`Part` s that ask for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from course_grading.core.checks import CheckFailed, Part, error_text
from course_grading.core.references import torch_optimizer_names

TORCH_OPTIMIZER_BASE = "torch.optim.optimizer.Optimizer"


# --- the answer is a class of its own --------------------------------------------------------


def own_class(answer: str, extends_optimizer: bool = False) -> Part:
    """A class that is not, and does not extend, a torch optimizer.

    With ``extends_optimizer`` it must also extend ``torch.optim.Optimizer`` (Weeks 2 on).
    """
    return Part(
        "core.produce:lineage",
        judge_own_class,
        context={"answer": answer, "extends_optimizer": extends_optimizer},
    )


def judge_own_class(part: Part, found: dict[str, Any]) -> None:
    """See :func:`own_class`."""
    answer = part.context["answer"]
    if not found["is_class"]:
        raise CheckFailed(f"`{answer}` must be a class, but it is {found['type']}.")
    names = torch_optimizer_names()
    for qualified in found["mro"]:
        if qualified in names:
            raise CheckFailed(
                f"`{answer}` is, or extends, {names[qualified]}: write the update yourself "
                "(extending torch.optim.Optimizer is fine)."
            )
    if part.context["extends_optimizer"] and TORCH_OPTIMIZER_BASE not in found["mro"]:
        raise CheckFailed(
            f"`{answer}` should extend torch.optim.Optimizer (class {answer}"
            "(torch.optim.Optimizer)), which keeps param groups and state and gives you "
            "state_dict() and load_state_dict()."
        )


# --- the constructor's keywords and defaults ---------------------------------------------------


def signature(answer: str, defaults: dict[str, Any], reference: str) -> Part:
    """The constructor takes every keyword of ``defaults``, with the same default value."""
    return Part(
        "core.produce:signature",
        judge_signature,
        context={"answer": answer, "defaults": defaults, "reference": reference},
    )


def judge_signature(part: Part, found: dict[str, Any]) -> None:
    """See :func:`signature`."""
    answer, reference = part.context["answer"], part.context["reference"]
    if "unreadable" in found:
        raise CheckFailed(
            f"the signature of {answer} cannot be read ({error_text(found['unreadable'])}): "
            f"define its constructor with named parameters, as {reference} does."
        )
    params = found["params"]
    for name, default in part.context["defaults"].items():
        if name not in params:
            raise CheckFailed(f"{answer}'s constructor should take `{name}`, as {reference} does.")
        param = params[name]
        if not param["has_default"] or not _same_default(param["default"], default):
            raise CheckFailed(
                f"{answer}'s default {name} should be {default!r}, as in {reference}; "
                f"yours is {param['repr'] if param['has_default'] else _EMPTY}."
            )


_EMPTY = "<class 'inspect._empty'>"


def _same_default(got: Any, want: Any) -> bool:
    if isinstance(want, (tuple, list)):
        return (
            type(got) is type(want)
            and len(got) == len(want)
            and all(_same_default(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(got, (dict, list, tuple)):
        return False
    return bool(got == want)


# --- invalid values raise ValueError -----------------------------------------------------------


def value_errors(
    answer: str,
    invalid: Sequence[tuple[dict[str, Any], tuple[str, ...]]],
    valid: Sequence[dict[str, Any]],
    rule: str = "",
    shape: Sequence[int] = (3,),
) -> Part:
    """Each ``invalid`` kwargs raise ValueError naming one of its names; ``valid`` ones don't.

    ``rule``, if given, says in the failure message which values are invalid; ``shape`` is
    the shape of the one parameter the constructor gets.
    """
    calls = [kwargs for kwargs, _ in invalid] + list(valid)
    return Part(
        "core.produce:constructor_outcomes",
        judge_value_errors,
        inputs={"calls": calls, "shape": tuple(shape)},
        context={"answer": answer, "names": [names for _, names in invalid], "rule": rule},
    )


def judge_value_errors(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`value_errors`."""
    answer, rule = part.context["answer"], part.context["rule"]
    calls, names = part.inputs["calls"], part.context["names"]
    if len(outcomes) != len(calls):
        raise CheckFailed("the constructor check did not run to the end.")
    for i, (kwargs, outcome) in enumerate(zip(calls, outcomes, strict=True)):
        call = call_text(answer, kwargs)
        if i < len(names):
            judge_value_error(call, outcome["error"], names[i], rule)
        elif outcome["error"] is not None:
            raise CheckFailed(
                f"{call} is valid (torch accepts it) but raised {error_text(outcome['error'])}"
            )


def judge_value_error(
    call: str, error: dict[str, Any] | None, names: Sequence[str] = (), rule: str = ""
) -> None:
    """The call described by ``call`` raised ``error``: a ValueError naming one of ``names``.

    ``error`` is what :func:`course_grading.core.harness.describe_error` recorded (``None``
    when nothing was raised); ``rule`` says in the message which values are invalid.
    """
    if error is None:
        raise CheckFailed(f"{call} should raise ValueError{f' ({rule})' if rule else ''}.")
    if not error["value_error"]:
        raise CheckFailed(f"{call} should raise ValueError, not {error['type']}.")
    message = str(error["message"])
    if names and not any(n in message.lower() for n in names):
        raise CheckFailed(
            f"{call} raised ValueError, but its message {message!r} does not name "
            f"the parameter ('{names[0]}')."
        )


def call_text(answer: str, kwargs: dict[str, Any]) -> str:
    """How a constructor call reads in a message: ``SGD(params, lr=-0.01)``."""
    return f"{answer}(" + ", ".join(["params", *(f"{k}={v!r}" for k, v in kwargs.items())]) + ")"


# --- step(closure) -----------------------------------------------------------------------------


def closure(answer: str, kwargs: dict[str, Any], expected: Sequence[float] | None = None) -> Part:
    """``step(closure)`` calls the closure once, with gradients on, and returns its loss.

    The closure's loss is ``(p**2).sum()`` for ``p = [1, -2]``; after the step ``p`` must equal
    ``expected`` when given, and must have moved otherwise.
    """
    return Part(
        "core.produce:closure_step",
        judge_closure,
        inputs={"kwargs": kwargs},
        context={"answer": answer, "expected": expected},
    )


def judge_closure(part: Part, found: dict[str, Any]) -> None:
    """See :func:`closure`."""
    import torch

    answer, kwargs = part.context["answer"], part.inputs["kwargs"]
    if "construct_error" in found:
        raise CheckFailed(
            f"{call_text(answer, kwargs)} raised {error_text(found['construct_error'])}"
        )
    if "step_error" in found:
        raise CheckFailed(f"step(closure) raised {error_text(found['step_error'])}")
    if found["calls"] != 1:
        raise CheckFailed(
            f"step(closure) should call the closure once; it did {found['calls']} times."
        )
    if found["returned_loss"] != 5.0:
        raise CheckFailed("step(closure) should return the loss the closure returned.")
    p = found["p"]
    start = torch.tensor([1.0, -2.0], dtype=torch.float64)
    if part.context["expected"] is None:
        stepped = not torch.equal(p, start)
    else:
        target = torch.tensor(part.context["expected"], dtype=torch.float64)
        stepped = torch.allclose(p, target, rtol=1e-12, atol=1e-12)
    if not stepped:
        raise CheckFailed("step(closure) should step with the gradient the closure computed.")
