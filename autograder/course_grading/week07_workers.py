"""What the Week 7 hidden checks run on every rank (started by ``optlab.launch``).

Rank 0 first computes the unsharded reference runs, before the submission is imported, so the
submission never runs in a process that holds a reference it could reach. Then every rank runs
the submission's ``ZeroRedundancyOptimizer`` on the same cases and reports, per step, all its
parameters, and, per parameter, whether its local optimizer kept state for it or changed it.
"""

from __future__ import annotations

import copy
import dataclasses
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.functional import cross_entropy

from optlab.launch import load_module
from optlab.zero_runs import ownership, tracking

Snapshots = list[dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ZeroCase:
    """One checked data-parallel run.

    ``model`` is ``"mlp"`` or ``"tied"`` (an embedding tied to the output layer, a frozen-able
    projection and a 0-dimensional parameter). ``frozen`` freezes one layer, ``groups`` splits
    the parameters into two param groups with their own settings, ``checkpoint_at`` takes
    ``state_dict()`` after that many steps and resumes from it in a fresh optimizer.
    """

    name: str
    optimizer: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    model: str = "mlp"
    frozen: bool = False
    groups: dict[str, Any] | None = None
    steps: int = 10
    seed: int = 0
    checkpoint_at: int | None = None


class SignMomentum(torch.optim.Optimizer):
    """A small optimizer that is not in torch.optim: a step along the sign of the momentum."""

    def __init__(self, params: Any, lr: float = 1e-3, beta: float = 0.9) -> None:
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                state["momentum"].mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                p.add_(state["momentum"].sign(), alpha=-group["lr"])
        return None


class TiedNet(nn.Module):
    """Token ids -> logits, with the output layer tied to the embedding (one shared weight)."""

    VOCAB, DIM = 13, 6

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(self.VOCAB, self.DIM, dtype=torch.float64)
        self.hidden = nn.Linear(self.DIM, 9, dtype=torch.float64)
        self.proj = nn.Linear(9, self.DIM, dtype=torch.float64)
        self.out_bias = nn.Parameter(torch.zeros(self.VOCAB, dtype=torch.float64))
        self.temperature = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids).mean(dim=1)
        h = self.proj(torch.tanh(self.hidden(h)))
        return (h @ self.embed.weight.T + self.out_bias) * self.temperature


def make_model(case: ZeroCase) -> nn.Module:
    """The case's model, initialised from its seed (identical on every rank)."""
    with torch.random.fork_rng():
        torch.manual_seed(case.seed)
        if case.model == "tied":
            model: nn.Module = TiedNet()
        else:
            model = nn.Sequential(
                nn.Linear(10, 16, dtype=torch.float64),
                nn.Tanh(),
                nn.Linear(16, 11, dtype=torch.float64),
                nn.Tanh(),
                nn.Linear(11, 5, dtype=torch.float64),
            )
    if case.frozen:
        layer = model.proj if case.model == "tied" else model[0]
        for p in layer.parameters():
            p.requires_grad_(False)
    return model


def optimizer_params(model: nn.Module, case: ZeroCase) -> list[Any]:
    """A plain list of parameters, or two param groups with their own settings."""
    params = list(model.parameters())
    if case.groups is None:
        return params
    first = params[:2]
    return [{"params": first, **case.groups}, {"params": params[2:]}]


def batch(case: ZeroCase, step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``rank`` trains on at ``step``: different on every rank."""
    g = torch.Generator().manual_seed(7919 * case.seed + 104729 * step + 31 * rank + 1)
    if case.model == "tied":
        ids = torch.randint(0, TiedNet.VOCAB, (8, 3), generator=g)
        return ids, torch.randint(0, TiedNet.VOCAB, (8,), generator=g)
    return torch.randn(8, 10, generator=g, dtype=torch.float64), torch.randint(
        0, 5, (8,), generator=g
    )


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The wrapped optimizer: a torch.optim class, or one torch does not have."""
    return SignMomentum if name == "SignMomentum" else getattr(torch.optim, name)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter (frozen ones too), detached."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --- the reference, computed before the submission is imported -------------------------------


def reference_run(case: ZeroCase, world_size: int, summed: bool = False) -> dict[str, Any]:
    """One process, all ranks' batches: the mean (or, for ``summed``, the sum) of their losses."""
    model = make_model(case)
    optimizer = optimizer_class(case.optimizer)(optimizer_params(model, case), **case.kwargs)
    snaps, checkpoint = [snapshot(model)], None
    for step in range(case.steps):
        optimizer.zero_grad()
        for rank in range(world_size):
            X, y = batch(case, step, rank)
            loss = cross_entropy(model(X), y)
            (loss if summed else loss / world_size).backward()
        optimizer.step()
        snaps.append(snapshot(model))
        if case.checkpoint_at == step + 1:
            checkpoint = copy.deepcopy(optimizer.state_dict())
    return {"snapshots": snaps, "state_dict": checkpoint, "state_bytes": _state_bytes([optimizer])}


# --- the submission on every rank ------------------------------------------------------------


class SubmissionError(RuntimeError):
    """The submission raised; the message holds the case and the submission's own traceback."""


def _state_bytes(optimizers: Any) -> int:
    total = 0
    for optimizer in optimizers:
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    total += value.numel() * value.element_size()
    return total


class _Blocked:
    """Stands in for torch's ZeroRedundancyOptimizer while the submission runs."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        raise SubmissionError(
            "your ZeroRedundancyOptimizer uses torch.distributed.optim.ZeroRedundancyOptimizer: "
            "write the sharding yourself."
        )


def _block_torch_zero() -> None:
    import torch.distributed.optim as dist_optim
    import torch.distributed.optim.zero_redundancy_optimizer as zro

    dist_optim.ZeroRedundancyOptimizer = _Blocked  # type: ignore[misc, assignment]
    zro.ZeroRedundancyOptimizer = _Blocked  # type: ignore[misc, assignment]


def _student_run(module: Any, case: ZeroCase, reference: dict | None) -> dict[str, Any]:
    __tracebackhide__ = True
    rank = dist.get_rank()
    model = make_model(case)
    Tracked = tracking(optimizer_class(case.optimizer))
    zero = module.ZeroRedundancyOptimizer(optimizer_params(model, case), Tracked, **case.kwargs)
    snaps, checkpoint = [snapshot(model)], None
    owned = None
    for step in range(case.steps):
        zero.zero_grad()
        X, y = batch(case, step, rank)
        cross_entropy(model(X), y).backward()
        zero.step()
        snaps.append(snapshot(model))
        if case.checkpoint_at == step + 1:
            owned = ownership(model, Tracked)
            # A copy: like torch.optim's, the state dict may share tensors with the optimizer.
            checkpoint = copy.deepcopy(zero.state_dict())
            usable = rank == 0 and reference is not None and _fits(checkpoint, reference)
            resumed = _resume(module, case, model, checkpoint if usable else None)
            if resumed is not None:
                model, zero = resumed
    return {
        "snapshots": snaps,
        "ownership": owned or ownership(model, Tracked),
        "state_dict": checkpoint if rank == 0 else None,
    }


def _fits(checkpoint: Any, reference: dict) -> bool:
    """Whether ``checkpoint`` has the reference state dict's keys and tensor shapes."""
    want = reference["state_dict"]
    if not isinstance(checkpoint, dict) or not {"state", "param_groups"} <= set(checkpoint):
        return False
    state = checkpoint["state"]
    if not isinstance(state, dict) or set(state) != set(want["state"]):
        return False
    for index, entries in want["state"].items():
        for key, value in entries.items():
            mine = state[index].get(key) if isinstance(state[index], dict) else None
            if not torch.is_tensor(mine) or mine.shape != value.shape:
                return False
    return True


def _resume(module: Any, case: ZeroCase, model: nn.Module, checkpoint: Any) -> tuple | None:
    """A fresh model and optimizer on every rank, loaded from rank 0's checkpoint.

    Rank 0 passes ``None`` when its checkpoint is not a full state dict: then no rank resumes
    (the check reports what is wrong with the state dict instead).
    """
    __tracebackhide__ = True
    shared = [copy.deepcopy(checkpoint) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(shared, src=0)
    if shared[0] is None:
        return None
    fresh = make_model(case)
    fresh.load_state_dict(model.state_dict())
    Tracked = tracking(optimizer_class(case.optimizer))
    zero = module.ZeroRedundancyOptimizer(optimizer_params(fresh, case), Tracked, **case.kwargs)
    zero.load_state_dict(shared[0])
    return fresh, zero


def run_cases(module_path: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Entry point on every rank: references (rank 0), then the submission on every case."""
    __tracebackhide__ = True
    world_size, rank = dist.get_world_size(), dist.get_rank()
    torch.manual_seed(0)
    parsed = [ZeroCase(**c) for c in cases]
    out: dict[str, Any] = {"runs": []}
    if rank == 0:
        out["reference"] = [reference_run(c, world_size) for c in parsed]
        out["summed"] = [reference_run(c, world_size, summed=True) for c in parsed]
    _block_torch_zero()

    try:
        module = load_module(module_path)
    except Exception as exc:
        raise SubmissionError(f"importing your module failed:\n{_student_traceback(exc)}") from None
    for i, case in enumerate(parsed):
        reference = out["reference"][i] if rank == 0 else None
        try:
            out["runs"].append(_student_run(module, case, reference))
        except SubmissionError as exc:
            raise SubmissionError(f"[{case.name}] {exc}") from None
        except Exception as exc:
            raise SubmissionError(
                f"[{case.name}] on rank {rank}, your code raised {type(exc).__name__}: {exc}\n"
                f"{_student_traceback(exc)}"
            ) from None
    return out


def _student_traceback(exc: BaseException) -> str:
    """The last frames of a traceback, without the grading code's own frames."""
    kept = [
        (frame, lineno)
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        if not frame.f_locals.get("__tracebackhide__", False)
        and "course_grading" not in frame.f_code.co_filename
        and "optlab" not in frame.f_code.co_filename
        and "<frozen" not in frame.f_code.co_filename
    ]
    summary = traceback.StackSummary.extract(iter(kept))
    return "".join(summary.format()[-6:]).rstrip()


def case_dict(case: ZeroCase) -> dict[str, Any]:
    """A case as plain data, for the trip to the workers."""
    return dataclasses.asdict(case)
