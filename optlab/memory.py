"""Measure the memory an optimizer's state really holds: bytes of tensors, per parameter, by dtype.

This is a measuring tool, not a formula: it walks ``optimizer.state`` after some steps and adds
up the tensors it finds there, whatever optimizer built them. Use it to check a count you made
by hand::

    from optlab.memory import measure_state, print_state

    print_state(optimizer, model)      # a table, one row per parameter
    records = measure_state(optimizer) # the same numbers, to compute with
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["StateRecord", "tensor_bytes", "measure_state", "print_state", "format_bytes"]


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes taken by the elements of ``tensor``: ``numel × element_size``."""
    return tensor.numel() * tensor.element_size()


@dataclass(frozen=True)
class StateRecord:
    """What the optimizer keeps for one parameter.

    ``entries`` maps each key of the parameter's state (``"exp_avg"``, ``"step"``, ...) to a
    description such as ``"float32 (32, 64)"``, or to the type name of a value that holds no
    tensor (a Python ``int`` takes no tensor memory). ``by_dtype`` adds up the bytes of the
    state's tensors per dtype name; ``total`` is their sum.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    entries: dict[str, str]
    by_dtype: dict[str, int]

    @property
    def numel(self) -> int:
        """Number of elements of the parameter itself."""
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def total(self) -> int:
        """Bytes of all tensors in this parameter's state."""
        return sum(self.by_dtype.values())


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside ``value``, looking into lists, tuples and dicts."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors_in(item)


def _describe(value: Any) -> str:
    tensors = list(_tensors_in(value))
    if not tensors:
        return f"{type(value).__name__} (no tensor)"
    return ", ".join(f"{_dtype_name(t.dtype)} {tuple(t.shape)}" for t in tensors)


def _names(model: nn.Module | Mapping[torch.Tensor, str] | None) -> dict[int, str]:
    if model is None:
        return {}
    if isinstance(model, nn.Module):
        return {id(p): name for name, p in model.named_parameters()}
    return {id(p): name for p, name in model.items()}


def measure_state(
    optimizer: torch.optim.Optimizer,
    model: nn.Module | Mapping[torch.Tensor, str] | None = None,
) -> list[StateRecord]:
    """One :class:`StateRecord` per parameter of ``optimizer``, in param-group order.

    Parameters that have no state yet (never stepped, or frozen) get a record with no entries
    and 0 bytes. ``model`` (or a ``{tensor: name}`` mapping) only supplies names such as
    ``"0.weight"``; without it parameters are named ``"param 0"``, ``"param 1"``, ... A tensor
    that appears twice in the same parameter's state is counted once.
    """
    names = _names(model)
    records = []
    index = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            entries = {str(key): _describe(value) for key, value in state.items()}
            by_dtype: dict[str, int] = {}
            seen: set[int] = set()
            for tensor in _tensors_in(dict(state)):
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                key = _dtype_name(tensor.dtype)
                by_dtype[key] = by_dtype.get(key, 0) + tensor_bytes(tensor)
            records.append(
                StateRecord(
                    index=index,
                    name=names.get(id(p), f"param {index}"),
                    shape=tuple(p.shape),
                    dtype=p.dtype,
                    entries=entries,
                    by_dtype=by_dtype,
                )
            )
            index += 1
    return records


def format_bytes(n: float) -> str:
    """``n`` bytes in a readable unit (powers of 1000: kB, MB, GB, TB)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g} B"


def print_state(
    optimizer: torch.optim.Optimizer,
    model: nn.Module | Mapping[torch.Tensor, str] | None = None,
) -> None:
    """Print a table of ``optimizer``'s state: per parameter, what it holds and how many bytes."""
    records = measure_state(optimizer, model)
    width = max([len(r.name) for r in records] + [9])
    print(f"{'parameter':<{width}}  {'shape':<12} {'dtype':<9} {'state bytes':>12}  state")
    for r in records:
        held = "; ".join(f"{k}: {v}" for k, v in r.entries.items()) or "(empty)"
        print(
            f"{r.name:<{width}}  {str(r.shape):<12} {_dtype_name(r.dtype):<9} {r.total:>12,}  "
            f"{held}"
        )
    totals: dict[str, int] = {}
    for r in records:
        for dtype, n in r.by_dtype.items():
            totals[dtype] = totals.get(dtype, 0) + n
    parts = ", ".join(f"{dtype}: {n:,} B" for dtype, n in sorted(totals.items())) or "nothing"
    print(f"total state: {sum(totals.values()):,} bytes ({parts})")
