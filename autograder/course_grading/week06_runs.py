"""Week 6 runs that checks compare: a loss scaler driven through an overflowing fp16 training
run, and an fp32-master-weight wrapper training a bf16/fp16 model.

The same driver runs the student's class and the reference; the reference side
(``torch.amp.GradScaler``, fp32 master copies written out op by op) runs in a fresh interpreter
that student code cannot reach, like :mod:`course_grading.reference`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from course_grading.isolated import run_isolated
from course_grading.optimizer_checks import batches
from course_grading.runs import Case, Snapshots, run_case

# --- loss scaling --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalerCase:
    """One scaler run: scaler settings, and which iterations misbehave or unscale early.

    Every iteration runs a small fp32 MLP forward under fp16 autocast, backpropagates the
    scaled loss, optionally injects an inf or NaN into one gradient, optionally calls
    ``unscale_`` and clips, then ``step`` and ``update``. ``input_scale`` makes the inputs, and
    so the fp16 activations and gradients, large enough to overflow at the larger scales.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 40
    input_scale: float = 10.0
    inject_inf: tuple[int, ...] = ()
    inject_nan: tuple[int, ...] = ()
    unscale_at: tuple[int, ...] = ()
    seed: int = 0


@dataclass
class ScalerRun:
    """What a scaler decided at every iteration: the scale after ``update()``, whether the
    optimizer stepped, and the parameters after the iteration."""

    scales: list[float] = field(default_factory=list)
    stepped: list[bool] = field(default_factory=list)
    params: list[dict[str, torch.Tensor]] = field(default_factory=list)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one thread, so that runs in two processes round identically."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _scaler_model(seed: int) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))


def _scaler_batches(case: ScalerCase) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(case.seed + 100)
    return [
        (
            case.input_scale * torch.randn(32, 8, generator=g),
            torch.randint(0, 4, (32,), generator=g),
        )
        for _ in range(case.steps)
    ]


def run_scaler(make_scaler: Callable[..., Any], case: ScalerCase) -> ScalerRun:
    """Drive ``make_scaler(**case.kwargs)`` through the case's training run."""
    model = _scaler_model(case.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps_taken: list[int] = []
    original_step = optimizer.step

    def counted_step(*args: Any, **kwargs: Any) -> Any:
        steps_taken.append(1)
        return original_step(*args, **kwargs)

    optimizer.step = counted_step  # type: ignore[method-assign]
    scaler = make_scaler(**case.kwargs)
    run = ScalerRun()
    for t, (X, y) in enumerate(_scaler_batches(case)):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(X), y)
        scaler.scale(loss).backward()
        if t in case.inject_inf:
            model[0].weight.grad[3, 1] = float("inf")
        if t in case.inject_nan:
            model[2].bias.grad[1] = float("nan")
        if t in case.unscale_at:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        before = len(steps_taken)
        scaler.step(optimizer)
        scaler.update()
        run.scales.append(float(scaler.get_scale()))
        run.stepped.append(len(steps_taken) > before)
        run.params.append({k: v.detach().clone() for k, v in model.named_parameters()})
    return run


def _grad_scaler(**kwargs: Any) -> Any:
    return torch.amp.GradScaler("cpu", **kwargs)


# --- fp32 master weights -------------------------------------------------------------------

MASTER_SIZES = (64, 24, 16, 10)
MASTER_STEPS = 40  # the longest master-weight case


@dataclass(frozen=True)
class MasterCase:
    """One master-weight run: the inner torch optimizer, its arguments, the model's dtype."""

    name: str
    optimizer: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    dtype: str = "bfloat16"
    steps: int = 20
    frozen: tuple[int, ...] = ()
    seed: int = 0


@dataclass
class MasterRun:
    """After every step: the model's low-precision parameters and the master copies (fp32)."""

    params: list[dict[str, torch.Tensor]] = field(default_factory=list)
    masters: list[dict[str, torch.Tensor]] = field(default_factory=list)


def master_model(case: MasterCase) -> nn.Sequential:
    """The low-precision MLP of a master-weight case, with its frozen layers frozen."""
    dtype = getattr(torch, case.dtype)
    layers: list[nn.Module] = []
    with torch.random.fork_rng():
        torch.manual_seed(case.seed)
        pairs = list(zip(MASTER_SIZES[:-1], MASTER_SIZES[1:], strict=True))
        for i, (n_in, n_out) in enumerate(pairs):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(pairs) - 1:
                layers.append(nn.Tanh())
    model = nn.Sequential(*layers).to(dtype)
    for i in case.frozen:
        model[i].requires_grad_(False)
    return model


@functools.cache
def _master_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(6)
    return [
        (torch.rand(32, MASTER_SIZES[0], generator=g), torch.randint(0, 10, (32,), generator=g))
        for _ in range(MASTER_STEPS)
    ]


def run_master(make_wrapper: Callable[..., Any], case: MasterCase) -> MasterRun:
    """Train the case's model with ``make_wrapper(params, optimizer_cls, **kwargs)``."""
    model = master_model(case)
    dtype = getattr(torch, case.dtype)
    names = [name for name, _ in model.named_parameters()]
    wrapper = make_wrapper(
        list(model.parameters()), getattr(torch.optim, case.optimizer), **case.kwargs
    )
    run = MasterRun()
    for X, y in _master_batches()[: case.steps]:
        wrapper.zero_grad()
        loss = F.cross_entropy(model(X.to(dtype)), y)
        loss.backward()
        wrapper.step()
        run.params.append({k: v.detach().float().clone() for k, v in model.named_parameters()})
        masters = list(getattr(wrapper, "master_params", []))
        run.masters.append({k: m.detach().clone() for k, m in zip(names, masters, strict=False)})
    return run


class ReferenceMaster:
    """fp32 master weights done by hand: copy, cast the gradients, step in fp32, write back."""

    def __init__(self, params: list[torch.Tensor], optimizer_cls: type, **kwargs: Any) -> None:
        self.params = list(params)
        self.master_params = [p.detach().float().clone() for p in self.params]
        for m, p in zip(self.master_params, self.params, strict=True):
            m.requires_grad_(p.requires_grad)
        self.optimizer = optimizer_cls(self.master_params, **kwargs)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, m in zip(self.params, self.master_params, strict=True):
            m.grad = None if p.grad is None else p.grad.float()
        self.optimizer.step()
        for p, m in zip(self.params, self.master_params, strict=True):
            p.copy_(m)


# --- the fresh process ---------------------------------------------------------------------


def fresh_reference(
    scaler_cases: list[ScalerCase],
    master_cases: list[MasterCase],
    adamw_cases: list[Case],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[list[ScalerRun], list[MasterRun], list[Snapshots]]:
    """The reference runs of every case, computed in one fresh interpreter.

    ``adamw_cases`` run ``torch.optim.AdamW`` on ``batches`` like
    :func:`course_grading.reference.reference_runs`; one process for the whole week saves the
    start-up of several.
    """
    __tracebackhide__ = True
    request = {
        "scaler": [dataclasses.asdict(c) for c in scaler_cases],
        "master": [dataclasses.asdict(c) for c in master_cases],
        "adamw": [dataclasses.asdict(c) for c in adamw_cases],
        "batches": list(batches),
    }
    runs = run_isolated("course_grading.week06_runs:compute_runs", request)
    return (
        [ScalerRun(**d) for d in runs["scaler"]],
        [MasterRun(**d) for d in runs["master"]],
        runs["adamw"],
    )


def compute_runs(request: dict[str, Any]) -> dict[str, list[Any]]:
    """What :func:`fresh_reference` asks the isolated process for."""
    warnings.simplefilter("ignore")
    scaler = [run_scaler(_grad_scaler, ScalerCase(**_tuples(c))) for c in request["scaler"]]
    master = [run_master(ReferenceMaster, MasterCase(**_tuples(c))) for c in request["master"]]
    adamw = [
        run_case(torch.optim.AdamW, Case(**_tuples(c)), request["batches"])
        for c in request["adamw"]
    ]
    return {
        "scaler": [dataclasses.asdict(r) for r in scaler],
        "master": [dataclasses.asdict(r) for r in master],
        "adamw": adamw,
    }


# --- the cases the checks compare ----------------------------------------------------------

SCALER_CASES = {
    "skip": [
        ScalerCase(
            "a NaN gradient, no overflow",
            {"init_scale": 256.0},
            steps=12,
            input_scale=1.0,
            inject_nan=(3, 8),
        ),
        ScalerCase(
            "an overflowing fp16 run with inf and NaN gradients",
            {},
            steps=30,
            inject_inf=(8,),
            inject_nan=(15,),
        ),
    ],
    "growth": [
        ScalerCase(
            "growth every 3 clean steps", {"growth_interval": 3}, steps=40, inject_inf=(20,)
        ),
        ScalerCase(
            "growth_factor=4, backoff_factor=0.25, growth_interval=4",
            {
                "init_scale": 1024.0,
                "growth_factor": 4.0,
                "backoff_factor": 0.25,
                "growth_interval": 4,
            },
            steps=40,
            inject_inf=(6, 7),
            inject_nan=(25,),
        ),
    ],
    "unscale": [
        ScalerCase(
            "unscale_() and clipping before step()",
            {"growth_interval": 5},
            steps=30,
            unscale_at=(1, 2, 3, 9, 10, 17, 22, 23),
            inject_inf=(12,),
        ),
        ScalerCase(
            "enabled=False", {"enabled": False}, steps=10, input_scale=1.0, unscale_at=(2, 5)
        ),
    ],
}

MASTER_CASES = {
    "basic": [
        MasterCase("SGD on a bf16 model", "SGD", {"lr": 0.02}),
        MasterCase("AdamW on a bf16 model", "AdamW", {"lr": 1e-3}),
        MasterCase(
            "SGD with momentum on an fp16 model",
            "SGD",
            {"lr": 0.05, "momentum": 0.9},
            dtype="float16",
        ),
    ],
    "frozen": [
        MasterCase(
            "AdamW with weight decay and a frozen first layer",
            "AdamW",
            {"lr": 2e-3, "weight_decay": 0.1},
            frozen=(0,),
        ),
        MasterCase("a longer SGD run on a bf16 model", "SGD", {"lr": 0.01}, steps=40),
    ],
}


FLAT_CASES = {
    "basic": [Case("default arguments", steps=20), Case("a larger learning rate", {"lr": 0.02})],
    "options": [
        Case(
            "weight decay, betas and eps",
            {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.99), "eps": 1e-6},
        ),
        Case("maximize", {"lr": 0.005, "maximize": True}, steps=15),
        Case("amsgrad", {"lr": 0.01, "amsgrad": True}, steps=20),
    ],
    "groups": [
        Case("a frozen first layer", {"lr": 0.01, "weight_decay": 0.05}, frozen=(0,)),
        Case(
            "param groups with their own lr and weight decay",
            {"lr": 0.005},
            groups=({"layers": (0,), "lr": 0.02}, {"layers": (2, 4), "weight_decay": 0.2}),
        ),
    ],
}


@functools.cache
def references() -> dict[tuple[str, str], Any]:
    """Every reference run of this week, by (kind, case name), from one fresh interpreter."""
    scaler = [c for cases in SCALER_CASES.values() for c in cases]
    master = [c for cases in MASTER_CASES.values() for c in cases]
    adamw = [c for cases in FLAT_CASES.values() for c in cases]
    runs = fresh_reference(scaler, master, adamw, batches())
    return {
        (kind, case.name): run
        for kind, cases, kind_runs in zip(
            ("scaler", "master", "adamw"), (scaler, master, adamw), runs, strict=True
        )
        for case, run in zip(cases, kind_runs, strict=True)
    }


@contextmanager
def quiet() -> Iterator[None]:
    """Keep the student's warnings out of stderr (nbgrader fails a cell that writes there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _tuples(data: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
