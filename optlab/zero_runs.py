"""Quick checks of a ZeRO-1 module file, run on every rank by ``optlab.launch``.

Every rank builds the same model (same seed), trains it on its own mini-batches with the
module's ``ZeroRedundancyOptimizer``, and reports its parameters and what its local optimizer
holds; rank 0 adds the same training without sharding. :func:`summarize_check` turns that into
numbers and one sentence per kind of problem (results, memory, ``state_dict``)::

    run = summarize_check(launch("optlab.zero_runs", "check_run", 2, args=(path_to_zero1,)))
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.functional import cross_entropy

from optlab.launch import load_module
from optlab.models import mlp

__all__ = [
    "CHECK_SIZES",
    "CheckSummary",
    "NEVER_CHANGED",
    "NOT_SYNCED",
    "SUMMED",
    "average_gradients",
    "check_run",
    "counting",
    "ownership",
    "ownership_problem",
    "rank_batch",
    "state_bytes",
    "state_dict_problem",
    "summarize_check",
    "tracking",
    "train_zero1",
]

# The small float64 model of the quick checks: 16 inputs, 4 classes, uneven layer sizes.
CHECK_SIZES = (16, 24, 12, 4)


def counting(optimizer_class: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """A subclass of ``optimizer_class`` that records every instance in its ``instances`` list.

    Pass it to a wrapper instead of the class itself to find the optimizers the wrapper built.
    """
    instances: list[torch.optim.Optimizer] = []

    class Counted(optimizer_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instances.append(self)

    Counted.instances = instances  # type: ignore[attr-defined]
    Counted.__name__ = Counted.__qualname__ = optimizer_class.__name__
    return Counted


def state_bytes(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    """Bytes held by the tensors in the optimizers' per-parameter state."""
    total = 0
    for optimizer in optimizers:
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    total += value.numel() * value.element_size()
    return total


def average_gradients(model: nn.Module) -> None:
    """What DDP does during backward: every gradient becomes the mean over the ranks."""
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size)


def rank_batch(
    step: int,
    rank: int,
    sizes: Sequence[int],
    batch_size: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mini-batch ``rank`` trains on at ``step``: different on every rank and step."""
    g = torch.Generator().manual_seed(1_000_003 * seed + 1009 * step + rank)
    X = torch.randn(batch_size, sizes[0], generator=g, dtype=dtype)
    y = torch.randint(0, sizes[-1], (batch_size,), generator=g)
    return X.to(device), y.to(device)


def tracking(optimizer_class: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """Like :func:`counting`, and ``changed`` holds the ``id`` of every parameter a step moved.

    It copies the parameters at every step: for checks on small models, not for timing.
    """
    instances: list[torch.optim.Optimizer] = []
    changed: set[int] = set()

    class Tracked(optimizer_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instances.append(self)

        def step(self, *args: Any, **kwargs: Any) -> Any:
            params = [p for group in self.param_groups for p in group["params"]]
            before = [p.detach().clone() for p in params]
            out = super().step(*args, **kwargs)
            for p, old in zip(params, before, strict=True):
                if not torch.equal(p.detach(), old):
                    changed.add(id(p))
            return out

    Tracked.instances = instances  # type: ignore[attr-defined]
    Tracked.changed = changed  # type: ignore[attr-defined]
    Tracked.__name__ = Tracked.__qualname__ = optimizer_class.__name__
    return Tracked


def ownership(model: nn.Module, tracked: Any) -> dict[str, Any]:
    """What the optimizers a :func:`tracking` class built on this rank hold and moved.

    ``"state"`` maps the name of each parameter they keep state for to its bytes, ``"changed"``
    lists the parameters their steps moved, ``"foreign"`` counts tensors they were given that
    are not the model's parameters, ``"bytes"`` is their whole state.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    foreign = sum(
        id(p) not in names
        for optimizer in tracked.instances
        for group in optimizer.param_groups
        for p in group["params"]
    )
    held: dict[str, int] = {}
    for optimizer in tracked.instances:
        for p, state in optimizer.state.items():
            if id(p) in names and state:
                held[names[id(p)]] = sum(
                    v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v)
                )
    return {
        "state": held,
        "changed": sorted(names[i] for i in tracked.changed if i in names),
        "foreign": foreign,
        "bytes": state_bytes(tracked.instances),
    }


# What a check says about the typical mistakes (the hidden checks say the same).
NOT_SYNCED = (
    "After stepping its shard, each rank must send its updated parameters to the other ranks "
    "(broadcast each parameter from the rank that owns it)."
)
SUMMED = (
    "This looks like a typical mistake: the gradients are summed over the ranks, not averaged; "
    "divide the all_reduce sum by the world size."
)
NEVER_CHANGED = (
    "'{name}' never changed from its initial value: no rank updated it, or its update never "
    "reached the others. Every parameter must be in exactly one shard, and be broadcast from "
    "the rank that owns it."
)


def ownership_problem(
    owners: Sequence[dict[str, Any]], trainable: Sequence[str], full_bytes: int
) -> str:
    """What is wrong with how the ranks share the optimizer state ("" if nothing).

    ``owners`` holds every rank's :func:`ownership`; ``full_bytes`` is the unsharded state.
    """
    if any(o["foreign"] for o in owners):
        return (
            "the optimizer_class you built was given tensors that are not the model's "
            "parameters (copies or flat buffers?): give it the parameters themselves."
        )
    for name in trainable:
        changed = [r for r, o in enumerate(owners) if name in o["changed"]]
        held = [r for r, o in enumerate(owners) if name in o["state"]]
        if len(changed) > 1:
            return (
                f"parameter '{name}' was updated by the optimizers of ranks {changed}: a rank is "
                "updating parameters it does not own. Each rank's optimizer must hold and step "
                "only its own shard."
            )
        if len(held) > 1:
            return (
                f"ranks {held} all hold optimizer state for '{name}': state is created for "
                "parameters a rank does not own (an optimizer creates state for every parameter "
                "that has a gradient, even a zero one). Give each rank's optimizer only its own "
                "shard."
            )
        if not held:
            return (
                f"no rank holds optimizer state for '{name}', which trains: it belongs to no "
                "shard, so no rank updates it."
            )
    world_size = len(owners)
    largest = max(max(o["state"].values(), default=0) for o in owners)
    for rank, o in enumerate(owners):
        if o["bytes"] > full_bytes / world_size + largest:
            return (
                f"rank {rank} holds {o['bytes']} bytes of optimizer state; without sharding the "
                f"whole state is {full_bytes} bytes, so an even share is about "
                f"{full_bytes / world_size:.0f}."
            )
    return ""


def state_dict_problem(got: Any, want: dict, rtol: float = 1e-7, atol: float = 1e-9) -> str:
    """What is wrong with rank 0's ``state_dict()`` compared with the unsharded one ("" if not)."""
    if not isinstance(got, dict) or not {"state", "param_groups"} <= set(got):
        return (
            "state_dict() on rank 0 should return a dict with 'state' and 'param_groups', as any "
            f"optimizer's; it returned {type(got).__name__}."
        )
    keys, want_keys = set(got["state"]), set(want["state"])
    if keys < want_keys:
        return (
            f"state_dict() on rank 0 holds state for {len(keys)} of the {len(want_keys)} "
            "parameters that have state: gather every rank's shard on rank 0 "
            "(dist.gather_object)."
        )
    if keys != want_keys:
        return (
            f"state_dict() on rank 0 has state under the keys {sorted(keys, key=str)}; expected "
            f"{sorted(want_keys)}, the positions of the parameters in param_groups (counted over "
            "all groups, as torch.optim does)."
        )
    for index, state in want["state"].items():
        mine = got["state"][index] if isinstance(got["state"][index], dict) else {}
        for key, value in state.items():
            if key not in mine:
                return f"state_dict()['state'][{index}] on rank 0 has no '{key}'."
            other = torch.as_tensor(mine[key]).double()
            if other.shape != value.shape or not torch.allclose(other, value.double(), rtol, atol):
                return (
                    f"state_dict()['state'][{index}]['{key}'] on rank 0 differs from the "
                    "unsharded optimizer's: the state of that parameter went missing or to the "
                    "wrong position."
                )
    groups = got["param_groups"]
    if len(groups) != len(want["param_groups"]):
        return (
            f"state_dict() on rank 0 has {len(groups)} param groups; expected "
            f"{len(want['param_groups'])}."
        )
    for i, (mine, ref) in enumerate(zip(groups, want["param_groups"], strict=True)):
        if list(mine.get("params", [])) != ref["params"]:
            return (
                f"state_dict() on rank 0: param group {i} should list the positions "
                f"{ref['params']} under 'params'; got {mine.get('params')!r:.120}."
            )
        for key, value in ref.items():
            if key != "params" and mine.get(key) != value:
                return (
                    f"state_dict() on rank 0: param group {i} should have {key}={value!r}, as "
                    f"the wrapped optimizer has; got {mine.get(key)!r}."
                )
    return ""


def _train_unsharded(
    optimizer_class: type, kwargs: dict, steps: int, world_size: int, seed: int, summed: bool
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """One process, all ranks' batches: the mean (``summed``: the sum) of the ranks' losses."""
    model = mlp(CHECK_SIZES, seed=seed, dtype=torch.float64)
    optimizer = optimizer_class(model.parameters(), **kwargs)
    for step in range(steps):
        optimizer.zero_grad()
        for rank in range(world_size):
            X, y = rank_batch(step, rank, CHECK_SIZES, seed=seed)
            loss = cross_entropy(model(X), y)
            (loss if summed else loss / world_size).backward()
        optimizer.step()
    return model, optimizer


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def train_zero1(
    zero1: Any,
    optimizer_class: type[torch.optim.Optimizer],
    kwargs: dict,
    steps: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, torch.optim.Optimizer, list[float]]:
    """On every rank: the checks' model trained ``steps`` steps with ``zero1``'s ZeRO-1.

    ``zero1`` is the module with ``ZeroRedundancyOptimizer``, which wraps ``optimizer_class``;
    each rank trains on its own mini-batches (:func:`rank_batch`). Returns the model, the sharded
    optimizer and this rank's loss at each step. :func:`check_run` (through ``optlab.launch``)
    and ``optlab.zero_train`` (under ``torchrun``) both train with it.
    """
    rank = dist.get_rank()
    model = mlp(CHECK_SIZES, seed=seed, dtype=torch.float64).to(device)
    sharded = zero1.ZeroRedundancyOptimizer(model.parameters(), optimizer_class, **kwargs)
    losses = []
    for step in range(steps):
        sharded.zero_grad()
        X, y = rank_batch(step, rank, CHECK_SIZES, seed=seed, device=device)
        loss = cross_entropy(model(X), y)
        loss.backward()
        sharded.step()
        losses.append(loss.item())
    return model, sharded, losses


def check_run(
    module_path: str,
    optimizer: str = "SGD",
    kwargs: dict | None = None,
    steps: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """On every rank: train with the module's ZeroRedundancyOptimizer wrapping ``optimizer``.

    Returns this rank's final parameters, its loss at each step, what its optimizer holds
    (:func:`ownership`) and its ``state_dict()``; rank 0 adds the initial parameters and the
    same run without sharding (with the gradients averaged, and summed) for comparison.
    """
    kwargs = dict(kwargs or {})
    rank, world_size = dist.get_rank(), dist.get_world_size()
    optimizer_class = getattr(torch.optim, optimizer)
    Tracked = tracking(optimizer_class)
    model, sharded, losses = train_zero1(load_module(module_path), Tracked, kwargs, steps, seed)
    out: dict[str, Any] = {
        "params": _params(model),
        "losses": losses,
        "ownership": ownership(model, Tracked),
        "state_dict": copy.deepcopy(sharded.state_dict()),
        "steps": steps,
    }
    if rank == 0:
        initial = _params(mlp(CHECK_SIZES, seed=seed, dtype=torch.float64))
        ref_model, ref_optimizer = _train_unsharded(
            optimizer_class, kwargs, steps, world_size, seed, summed=False
        )
        summed_model, _ = _train_unsharded(
            optimizer_class, kwargs, steps, world_size, seed, summed=True
        )
        out["initial"] = initial
        out["reference"] = _params(ref_model)
        out["summed"] = _params(summed_model)
        out["reference_state_bytes"] = state_bytes([ref_optimizer])
        out["reference_state_dict"] = copy.deepcopy(ref_optimizer.state_dict())
    return out


@dataclass(frozen=True)
class CheckSummary:
    """What a quick check needs from :func:`check_run`'s results.

    The three ``*_problem`` fields say in a sentence what is wrong, or are empty.
    """

    max_difference: float  # rank 0's parameters against the unsharded run
    max_rank_gap: float  # the largest difference between two ranks' parameters
    state_bytes: tuple[int, ...]  # optimizer state held on each rank
    reference_state_bytes: int  # the same state without sharding
    result_problem: str
    memory_problem: str
    state_dict_problem: str


def _largest_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, str]:
    return max((float((a[n] - b[n]).abs().max()), n) for n in b)


def summarize_check(results: Sequence[dict[str, Any]], tolerance: float = 1e-10) -> CheckSummary:
    """Reduce the per-rank results of :func:`check_run` to a :class:`CheckSummary`."""
    first = results[0]
    steps = first["steps"]
    diff, worst = _largest_gap(first["params"], first["reference"])
    gap, gap_name = max(_largest_gap(r["params"], first["params"]) for r in results)
    problem = ""
    if gap > tolerance:
        problem = (
            f"after {steps} steps the ranks hold different values of '{gap_name}' (they differ "
            f"by {gap:.3g}). {NOT_SYNCED}"
        )
    elif diff > tolerance:
        problem = (
            f"after {steps} steps, '{worst}' differs from the unsharded optimizer's by {diff:.3g}."
        )
        if len(results) > 1 and _largest_gap(first["params"], first["summed"])[0] <= tolerance:
            problem += " " + SUMMED
        elif torch.equal(first["params"][worst], first["initial"][worst]):
            problem += " " + NEVER_CHANGED.format(name=worst)
    full = int(first["reference_state_bytes"])
    owners = [r["ownership"] for r in results]
    saved = state_dict_problem(first["state_dict"], first["reference_state_dict"])
    if saved and problem:
        saved += f" But first make the steps right: {problem}"
    return CheckSummary(
        max_difference=diff,
        max_rank_gap=gap,
        state_bytes=tuple(int(o["bytes"]) for o in owners),
        reference_state_bytes=full,
        result_problem=problem,
        memory_problem=ownership_problem(owners, list(first["reference"]), full),
        state_dict_problem=saved,
    )
