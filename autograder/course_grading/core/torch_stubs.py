"""Student side: switch off the parts of torch that would answer an exercise in one call.

While a notebook is graded, every Python process in its sandbox starts with
:func:`install` (from the kit's ``sitecustomize.py``). It reads a manifest the trusted side
wrote for the week, and from then on

- importing a hidden module (``torch.optim.sgd``, ``torch.amp.grad_scaler``, ...) gives a
  stub module: the same names, but every class refuses to be instantiated and every function
  refuses to run, with a message that says why;
- the ATen operators behind them (``aten::_fused_adamw_``, ...) refuse to run.

In the sandbox the original files are also hidden (empty files are mounted over them), so
the real code is nowhere to be read or reloaded. Outside a sandbox (``--no-sandbox``) the
stubs still stop the ordinary routes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types
import warnings
from typing import Any

MANIFEST_ENV = "COURSE_TORCH_STUBS"


class SwitchedOff(RuntimeError):
    """Raised by anything the course switched off while grading."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the message, not the stub's code.
        return [f"\x1b[0;31mSwitchedOff\x1b[0m: {self}"]


def _refusal(label: str, message: str) -> str:
    return f"{label} is switched off while the course grades your notebook: {message}"


def _stub_function(label: str, message: str, name: str, module: str) -> Any:
    def switched_off(*_args: Any, **_kwargs: Any) -> Any:
        __tracebackhide__ = True
        raise SwitchedOff(_refusal(label, message))

    switched_off.__name__ = switched_off.__qualname__ = name
    switched_off.__module__ = module
    return switched_off


def _stub_class(label: str, message: str, name: str, module: str) -> type:
    def __init__(self: Any, *_args: Any, **_kwargs: Any) -> None:  # noqa: N807
        __tracebackhide__ = True
        raise SwitchedOff(_refusal(label, message))

    return type(name, (), {"__init__": __init__, "__module__": module, "__qualname__": name})


class _StubLoader(importlib.abc.Loader):
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec, self.message = spec, spec["message"]

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__
        module.__doc__ = _refusal(name, self.message)
        for attr, kind in self.spec["names"].items():
            label = self.spec["labels"].get(attr, f"{name}.{attr}")
            if kind == "class":
                value: Any = _stub_class(label, self.message, attr, name)
            elif kind == "function":
                value = _stub_function(label, self.message, attr, name)
            elif "from" in kind:  # imported from a module that stays on: the real object
                value = importlib.import_module(kind["from"])
                for part in kind["name"].split("."):
                    value = getattr(value, part)
            else:  # a plain constant, kept as it was (e.g. __all__)
                value = kind["value"]
            setattr(module, attr, value)


# The operator registrations must outlive the import that made them.
_LIBRARIES: list[Any] = []


def _refuse_operators(ops: dict[str, str]) -> None:
    """Make the ATen operators ``ops`` (name -> why) refuse to run, once torch is imported."""
    import torch
    import torch.library

    library = torch.library.Library("aten", "IMPL")
    _LIBRARIES.append(library)
    for op, message in ops.items():
        packet = getattr(torch.ops.aten, op, None)
        if packet is None:
            continue
        refuse = _stub_function(f"torch.{op}", message, op, "torch")
        for overload in packet.overloads():
            qualified = op if overload == "default" else f"{op}.{overload}"
            for key in ("CPU", "CUDA"):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        library.impl(qualified, refuse, key)
                except Exception:  # a key this torch build has no kernels for
                    continue


class _ThenRefuse(importlib.abc.Loader):
    """torch's own loader, followed by switching off the operators."""

    def __init__(self, loader: Any, ops: dict[str, str]) -> None:
        self.loader, self.ops = loader, ops

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)
        _refuse_operators(self.ops)


class _StubFinder(importlib.abc.MetaPathFinder):
    def __init__(self, manifest: dict[str, Any]) -> None:
        self.modules = manifest["modules"]
        self.ops = manifest.get("ops", {})

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torch" and self.ops:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _ThenRefuse(spec.loader, self.ops)
            return spec
        if fullname not in self.modules:
            return None
        loader = _StubLoader(self.modules[fullname])
        return importlib.machinery.ModuleSpec(fullname, loader)


def install(manifest_path: str | None = None) -> None:
    """Put the week's stubs in front of every import (no-op without a manifest)."""
    path = manifest_path or os.environ.get(MANIFEST_ENV)
    if not path or not os.path.exists(path):
        return
    with open(path) as f:
        manifest = json.load(f)
    sys.meta_path.insert(0, _StubFinder(manifest))
