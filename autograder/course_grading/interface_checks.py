"""Checks of an optimizer's interface that every week shares: constructor and step(closure).

A student optimizer takes the keywords of the ``torch.optim`` class it imitates, with the same
defaults, rejects invalid values with a ``ValueError`` that names the parameter, and supports
``step(closure)`` as ``torch.optim`` optimizers do.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from course_grading.compare import CheckFailed
from course_grading.guards import forbid_torch_optim


def check_signature(cls: Any, answer: str, defaults: dict[str, Any], reference: str) -> None:
    """The constructor takes every keyword of ``defaults`` with the same default value."""
    __tracebackhide__ = True
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    for name, default in defaults.items():
        if name not in params:
            raise CheckFailed(f"{answer}'s constructor should take `{name}`, as {reference} does.")
        if params[name].default != default:
            raise CheckFailed(
                f"{answer}'s default {name} should be {default!r}, as in {reference}; "
                f"yours is {params[name].default!r}."
            )


def check_value_errors(
    cls: Any,
    answer: str,
    invalid: Sequence[tuple[dict[str, Any], tuple[str, ...]]],
    valid: Sequence[dict[str, Any]],
    rule: str = "",
) -> None:
    """Each ``invalid`` kwargs raises ValueError naming one of its names; ``valid`` ones don't.

    ``rule``, if given, says in the failure message which values are invalid.
    """
    __tracebackhide__ = True
    for kwargs, names in invalid:
        expect_value_error(
            _fmt(answer, kwargs),
            partial(cls, [torch.zeros(3, requires_grad=True)], **kwargs),
            names,
            rule,
        )
    for kwargs in valid:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cls([torch.zeros(3, requires_grad=True)], **kwargs)
        except Exception as exc:
            raise CheckFailed(
                f"{_fmt(answer, kwargs)} is valid (torch accepts it) but raised "
                f"{type(exc).__name__}: {exc}"
            ) from None


def expect_value_error(
    call: str, make: Callable[[], Any], names: Sequence[str] = (), rule: str = ""
) -> None:
    """``make()`` raises ValueError, whose message names one of ``names`` (if any are given).

    ``call`` is how failure messages show the call; ``rule`` says which values are invalid.
    """
    __tracebackhide__ = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make()
    except ValueError as exc:
        if names and not any(n in str(exc).lower() for n in names):
            raise CheckFailed(
                f"{call} raised ValueError, but its message {str(exc)!r} does not name "
                f"the parameter ('{names[0]}')."
            ) from None
    except Exception as exc:
        raise CheckFailed(f"{call} should raise ValueError, not {type(exc).__name__}.") from None
    else:
        raise CheckFailed(f"{call} should raise ValueError{f' ({rule})' if rule else ''}.")


def _fmt(answer: str, kwargs: dict[str, Any]) -> str:
    return f"{answer}(" + ", ".join(["params", *(f"{k}={v!r}" for k, v in kwargs.items())]) + ")"


def check_closure(
    cls: Any, answer: str, kwargs: dict[str, Any], expected: Sequence[float] | None = None
) -> None:
    """``step(closure)`` calls the closure once, with gradients on, and returns its loss.

    The closure's loss is ``(p**2).sum()`` for ``p = [1, -2]``; after the step ``p`` must equal
    ``expected`` when given, and must have moved otherwise.
    """
    __tracebackhide__ = True
    start = torch.tensor([1.0, -2.0], dtype=torch.float64)
    p = start.clone().requires_grad_()
    try:
        opt = cls([p], **kwargs)
    except Exception as exc:
        raise CheckFailed(f"{_fmt(answer, kwargs)} raised {type(exc).__name__}: {exc}") from None
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    try:
        with forbid_torch_optim(answer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            returned = opt.step(closure)
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(f"step(closure) raised {type(exc).__name__}: {exc}") from None
    if len(calls) != 1:
        raise CheckFailed(f"step(closure) should call the closure once; it did {len(calls)} times.")
    if not isinstance(returned, torch.Tensor) or float(returned.detach()) != 5.0:
        raise CheckFailed("step(closure) should return the loss the closure returned.")
    if expected is None:
        stepped = not torch.equal(p.detach(), start)
    else:
        target = torch.tensor(expected, dtype=torch.float64)
        stepped = torch.allclose(p.detach(), target, rtol=1e-12, atol=1e-12)
    if not stepped:
        raise CheckFailed("step(closure) should step with the gradient the closure computed.")
