"""Student side: what every rank of a Week 7 check runs (started by ``optlab.launch``).

Every rank imports the submission's module and runs its ``ZeroRedundancyOptimizer`` on the
same cases, with different data on each rank, and reports, per step, all its parameters, and,
per parameter, whether its local optimizer kept state for it or changed it; rank 0 adds its
``state_dict()``. No rank computes a reference: the trusted side trains the same models
without sharding, in its own process, and compares.

The models, batches and the optimizer class that is not in ``torch.optim`` are defined here
because both sides need them: the ranks train them sharded, the trusted side unsharded.
"""

from __future__ import annotations

import copy
import dataclasses
import json
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
# The longest error message and traceback a rank reports (they travel in one LaunchError).
MESSAGE_CHARS = 1500
TRACEBACK_CHARS = 4000


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

    def to_dict(self) -> dict[str, Any]:
        """The case as plain data, as it travels to the sandbox and the ranks."""
        return dataclasses.asdict(self)


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


# --- the submission on every rank ------------------------------------------------------------


class SubmissionError(RuntimeError):
    """The submission raised. The message is JSON: what happened, as data for the judge."""


def _report(**what: Any) -> SubmissionError:
    return SubmissionError(json.dumps(what, ensure_ascii=False))


def _student_run(
    module: Any, case: ZeroCase, layout: dict[int, dict[str, list[int]]] | None
) -> dict[str, Any]:
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
            usable = rank == 0 and layout is not None and _fits(checkpoint, layout)
            resumed = _resume(module, case, model, checkpoint if usable else None)
            if resumed is not None:
                model, zero = resumed
    return {
        "snapshots": snaps,
        "ownership": owned or ownership(model, Tracked),
        "state_dict": checkpoint if rank == 0 else None,
    }


def _fits(checkpoint: Any, layout: dict[int, dict[str, list[int]]]) -> bool:
    """Whether ``checkpoint`` has the keys and tensor shapes ``layout`` lists.

    ``layout`` is what the check knows of a full state dict: for each position that has state,
    the shape of every tensor in it.
    """
    if not isinstance(checkpoint, dict) or not {"state", "param_groups"} <= set(checkpoint):
        return False
    state = checkpoint["state"]
    if not isinstance(state, dict) or set(state) != set(layout):
        return False
    for index, entries in layout.items():
        for key, shape in entries.items():
            mine = state[index].get(key) if isinstance(state[index], dict) else None
            if not torch.is_tensor(mine) or tuple(mine.shape) != tuple(shape):
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


def run_cases(
    module_path: str, cases: list[dict[str, Any]], layouts: list[Any] | None = None
) -> dict[str, Any]:
    """Entry point on every rank: the submission on every case.

    ``layouts[i]``, for a case that resumes from a checkpoint, is the layout of a full state
    dict there (see :func:`_fits`); rank 0 resumes only from a checkpoint that has it.
    """
    __tracebackhide__ = True
    rank = dist.get_rank()
    torch.manual_seed(0)
    parsed = [ZeroCase(**c) for c in cases]
    layouts = list(layouts) if layouts is not None else [None] * len(parsed)
    out: dict[str, Any] = {"runs": []}
    try:
        module = load_module(module_path)
    except Exception as exc:
        raise _report(kind="import", rank=rank, **_error(exc)) from None
    for i, case in enumerate(parsed):
        try:
            out["runs"].append(_student_run(module, case, layouts[i]))
        except Exception as exc:
            raise _report(kind="raised", case=i, rank=rank, **_error(exc)) from None
    return out


def _error(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:MESSAGE_CHARS],
        "traceback": _student_traceback(exc)[-TRACEBACK_CHARS:],
    }


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
