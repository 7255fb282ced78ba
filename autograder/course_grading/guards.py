"""Make sure a submitted optimizer is written by hand, not borrowed from ``torch.optim``."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import torch
import torch.optim

from course_grading.compare import CheckFailed


def _torch_optimizer_classes() -> list[type]:
    return [
        obj
        for obj in vars(torch.optim).values()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    ]


def require_own_class(cls: Any, answer: str) -> None:
    """Fail unless ``cls`` is a class that is not, and does not extend, a torch optimizer.

    Extending the bookkeeping base class ``torch.optim.Optimizer`` is allowed.
    """
    __tracebackhide__ = True
    if not isinstance(cls, type):
        raise CheckFailed(f"`{answer}` must be a class, but it is {type(cls).__name__}.")
    for torch_cls in _torch_optimizer_classes():
        if issubclass(cls, torch_cls):
            raise CheckFailed(
                f"`{answer}` is, or extends, torch.optim.{torch_cls.__name__}: write the update "
                "yourself (extending torch.optim.Optimizer is fine)."
            )


def _functional_entry_points() -> list[tuple[Any, str]]:
    """(module, name) of every update function inside the ``torch.optim`` implementation."""
    found = []
    for info in pkgutil.iter_modules(torch.optim.__path__):
        if info.name.startswith("lr_scheduler") or info.name in {"optimizer", "swa_utils"}:
            continue
        module = importlib.import_module(f"torch.optim.{info.name}")
        for name, obj in vars(module).items():
            if (
                callable(obj)
                and not isinstance(obj, type)
                and getattr(obj, "__module__", "") == module.__name__
            ):
                found.append((module, name))
    return found


@contextlib.contextmanager
def forbid_torch_optim(answer: str) -> Iterator[None]:
    """Within the block, any call into ``torch.optim``'s update code fails the check."""

    def blocker(label: str) -> Any:
        def refuse(*_args: Any, **_kwargs: Any) -> None:
            __tracebackhide__ = True
            raise CheckFailed(
                f"`{answer}` called {label}: the update must be your own code, not torch.optim's."
            )

        return refuse

    saved: list[tuple[Any, str, Any]] = []
    for cls in _torch_optimizer_classes():
        saved.append((cls, "step", cls.__dict__.get("step")))
        cls.step = blocker(f"torch.optim.{cls.__name__}.step")
    for module, name in _functional_entry_points():
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, blocker(f"{module.__name__}.{name}"))
    for name in ("_fused_sgd_", "_fused_adam_", "_fused_adamw_"):
        if hasattr(torch, name):
            saved.append((torch, name, getattr(torch, name)))
            setattr(torch, name, blocker(f"torch.{name}"))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            if original is None:  # an inherited step (torch.optim.AdamW's): unshadow it
                delattr(owner, name)
            else:
                setattr(owner, name, original)
