"""Trusted side: the data optimizer checks train on, and ``torch.optim``'s answers on it.

These run in the grading worker, where no student code runs, so the reference is the real
``torch.optim`` as installed.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from typing import Any

import torch

from course_grading.core.runs import Batches, Case, Snapshots, run_case
from optlab.data import all_digits

BATCH_SIZE = 32
# The longest optimizer run any check asks for.
MAX_STEPS = 40

# torch.optim's constructor keywords and defaults in the pinned torch, for every optimizer a
# week asks students to write (one table; the signature checks compare with it).
TORCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "SGD": {
        "lr": 1e-3,
        "momentum": 0,
        "dampening": 0,
        "weight_decay": 0,
        "nesterov": False,
        "maximize": False,
    },
    "RMSprop": {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0,
        "momentum": 0,
        "centered": False,
        "maximize": False,
    },
    "Adam": {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0,
        "amsgrad": False,
        "maximize": False,
    },
    "AdamW": {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 1e-2,
        "amsgrad": False,
        "maximize": False,
    },
}


def make_batches(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` mini-batches of real digits (float64), in a fixed order."""
    X, y = all_digits(torch.float64)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (BATCH_SIZE,), generator=g)
        out.append((X[idx], y[idx]))
    return out


@functools.cache
def digit_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed mini-batches every optimizer check trains on."""
    return make_batches(MAX_STEPS)


def load_class(dotted: str) -> Any:
    """The object a dotted name such as ``"torch.optim.SGD"`` names."""
    module_name, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def reference_runs(reference: str, cases: Sequence[Case], batches: Batches) -> list[Snapshots]:
    """Run ``reference`` (a dotted class name such as ``"torch.optim.SGD"``) on every case."""
    cls = load_class(reference)
    return [run_case(cls, case, batches) for case in cases]


# torch.optim wraps these in torch._disable_dynamo, whose first call imports torch._dynamo
# (1.4 s of a grading process); nothing compiles here, so the judges call what is underneath.
_GUARDED = ("add_param_group", "load_state_dict", "state_dict", "zero_grad")


@functools.cache
def unguarded(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``cls`` with the methods it inherits from ``torch.optim.Optimizer`` unwrapped from
    torch's compile guards: the same optimizer, usable in a judge without ``torch._dynamo``."""
    base = torch.optim.Optimizer
    methods = {
        name: getattr(base, name).__wrapped__
        for name in _GUARDED
        if getattr(cls, name) is getattr(base, name)
    }
    return type(cls.__name__, (cls,), methods)


@functools.cache
def torch_optimizer_names() -> dict[str, str]:
    """Every ``torch.optim`` optimizer class: its qualified names -> ``torch.optim.Name``.

    Both the name the class gives itself and the name of the module that defines it count:
    its stub in the sandbox is named after the module that defines it, so a class that is or
    extends one is recognised there too.
    """
    import inspect

    names = {}
    for name, obj in vars(torch.optim).items():
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer):
            if obj is not torch.optim.Optimizer:
                names[f"{obj.__module__}.{obj.__qualname__}"] = f"torch.optim.{name}"
                home = inspect.getmodule(obj.step) or inspect.getmodule(obj)
                names[f"{home.__name__}.{obj.__qualname__}"] = f"torch.optim.{name}"
    return names
