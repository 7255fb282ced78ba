"""Trusted side: which parts of torch a week switches off while grading, and how.

A week's ``checks.py`` names the torch modules that would answer its exercises in one call
(``HIDDEN_TORCH``: module name -> why it is off). For the sandbox this module writes

- a manifest for :mod:`course_grading.core.torch_stubs`: every name each module defines, so
  the stub module has the same names, and the ATen operators to switch off with them;
- the list of the modules' files (sources and compiled caches), which the sandbox covers with
  empty files so that the real code cannot be read, reloaded or executed from there.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

OPTIMIZER_REASON = "the update must be your own code, not torch.optim's."
# Fused kernels that run a whole optimizer step in one call.
OPTIMIZER_OPS = ("_fused_adam_", "_fused_adamw_", "_fused_sgd_", "_fused_adagrad_")


def defined_in(obj: Any, module: ModuleType) -> bool:
    """Whether ``obj`` is written in ``module``'s own file. (torch gives some classes the
    ``__module__`` of the package that exports them: ``torch.optim.Muon`` says ``torch.optim``
    but lives in ``torch/optim/_muon.py``.)"""
    if getattr(obj, "__module__", None) == module.__name__:
        return True
    functions = (
        [v for v in vars(obj).values() if inspect.isfunction(v)] if isinstance(obj, type) else [obj]
    )
    files = {getattr(getattr(f, "__code__", None), "co_filename", None) for f in functions}
    return getattr(module, "__file__", None) in files


@functools.cache
def _optimizer_modules() -> tuple[str, ...]:
    names = ["torch.optim._functional", "torch.optim._multi_tensor"]
    for info in pkgutil.iter_modules(torch.optim.__path__):
        name = f"torch.optim.{info.name}"
        module = importlib.import_module(name)
        if any(
            isinstance(obj, type)
            and issubclass(obj, torch.optim.Optimizer)
            and obj is not torch.optim.Optimizer
            and defined_in(obj, module)
            for obj in vars(module).values()
        ):
            names.append(name)
    if torch.distributed.is_available():
        # Functional and distributed optimizers (ZeroRedundancyOptimizer among them).
        names.append("torch.distributed.optim")
    return tuple(sorted(names))


def torch_optimizers() -> dict[str, str]:
    """Every module of torch that holds an optimizer (``torch.optim.Optimizer`` stays)."""
    return {name: OPTIMIZER_REASON for name in _optimizer_modules()}


TORCH_OPTIMIZERS = torch_optimizers()


def manifest(hidden: dict[str, str], ops: dict[str, str] | None = None) -> dict[str, Any]:
    """The stubs' manifest for the modules in ``hidden`` and the ATen operators in ``ops``
    (name -> reason). Switching torch's optimizers off switches their fused kernels off too."""
    modules = {}
    for name, reason in hidden.items():
        module = importlib.import_module(name)
        names: dict[str, Any] = {}
        labels = {}
        for attr, obj in vars(module).items():
            if attr.startswith("__") and attr != "__all__":
                continue
            kind = _kind(obj, module, hidden)
            if kind is None:
                continue
            names[attr] = kind
            public = _public_name(attr, obj)
            if public:
                labels[attr] = public
        modules[name] = {"names": names, "labels": labels, "message": reason}
    refused = dict(ops or {})
    if any(reason == OPTIMIZER_REASON for reason in hidden.values()):
        refused.update({op: OPTIMIZER_REASON for op in OPTIMIZER_OPS})
    return {"modules": modules, "ops": refused}


def _kind(obj: Any, module: ModuleType, hidden: dict[str, str]) -> Any:
    home = getattr(obj, "__module__", None)
    imported = home not in (None, module.__name__, *hidden) and not defined_in(obj, module)
    if (isinstance(obj, type) or callable(obj)) and imported:
        # Imported from a module that stays on (torch.Tensor, torch.optim.Optimizer): keep it.
        qualname = getattr(obj, "__qualname__", "")
        if home and qualname and "<" not in qualname and _resolves(home, qualname, obj):
            return {"from": home, "name": qualname}
    if isinstance(obj, type):
        return "class"
    if callable(obj):
        return "function"
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return {"value": obj}
    if isinstance(obj, (list, tuple)) and all(isinstance(v, str) for v in obj):
        return {"value": list(obj)}
    return None


def _resolves(module: str, qualname: str, obj: Any) -> bool:
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    return found is obj


def _public_name(attr: str, obj: Any) -> str | None:
    """``torch.optim.SGD`` for the class ``torch.optim.sgd.SGD``: how students know it."""
    for package in ("torch.optim", "torch.amp", "torch.nn.utils", "torch.distributed.optim"):
        try:
            owner = importlib.import_module(package)
        except ImportError:
            continue
        if getattr(owner, attr, None) is obj:
            return f"{package}.{attr}"
    return None


def hidden_files(hidden: dict[str, str]) -> list[Path]:
    """The files of the modules in ``hidden``: their sources and compiled caches."""
    files: list[Path] = []
    for name in hidden:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        source = Path(spec.origin)
        if source.name == "__init__.py":  # a package: every file in it
            files += sorted(p for p in source.parent.rglob("*") if p.is_file())
            continue
        files.append(source)
        cache = source.parent / "__pycache__"
        files += sorted(cache.glob(f"{source.stem}.*.pyc"))
    return files
