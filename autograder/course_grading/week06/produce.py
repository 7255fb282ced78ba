"""Student side: Week 6's producers (the shared ones are in ``core.produce``), and the runs both
sides perform.

``run_scaler`` drives a loss scaler through an fp16 training run; ``run_master`` trains a
low-precision model through a master-weight wrapper. The sandbox runs them with the student's
class, the trusted side with its references and its typical mistakes, so that the runs differ
only by the class. Which cases are checked, and what is right, is not here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils._python_dispatch import TorchDispatchMode

from course_grading.core.harness import attempt, describe_error, student_code
from course_grading.core.runs import Case, run_case
from course_grading.week05.produce import one_thread


class _Request:
    """A case (a dataclass with a ``name``) that travels to the sandbox as plain data."""

    def to_request(self) -> dict[str, Any]:
        """The case as plain data, as it travels to the sandbox (its name stays outside)."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        del data["name"]  # the case's name stays on the trusted side
        return data

    @classmethod
    def from_request(cls, data: dict[str, Any]) -> Self:
        """A case back from :meth:`to_request`."""
        tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**{"name": "", **tuples})


def _runs(
    run: Callable[[Any, Any], Any],
    answer: Any,
    case_type: type[_Request],
    cases: Sequence[dict[str, Any]],
    forbid: Sequence[str] = (),
) -> dict[str, Any]:
    """``run(answer, case)`` on every case, as plain data; stops at the first case that raises."""
    runs = []
    for index, case in enumerate(cases):
        with one_thread():
            result, error = attempt(
                lambda case=case: dataclasses.asdict(run(answer, case_type.from_request(case))),
                forbid,
            )
        if error is not None:
            return {"runs": runs, "error": {**error, "case": index}}
        runs.append(result)
    return {"runs": runs}


# --- loss scaling --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalerCase(_Request):
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


def scaler_runs(
    LossScaler: Any, cases: Sequence[dict[str, Any]], forbid: Sequence[str] = ()
) -> dict[str, Any]:
    """The student's scaler on every case; stops at the first case that raises."""
    return _runs(run_scaler, LossScaler, ScalerCase, cases, forbid)


def scaler_basics(
    LossScaler: Any, inits: Sequence[float], disabled_init: float, forbid: Sequence[str] = ()
) -> dict[str, Any]:
    """``get_scale()`` and ``scale(loss)`` (and its gradient) for each ``init_scale``, then a
    scaler built with ``enabled=False``; stops where the student's code raises."""
    found: dict[str, Any] = {"inits": []}
    at: dict[str, Any] = {"stage": None, "index": None}

    def run() -> None:
        for index, init in enumerate(inits):
            seen: dict[str, Any] = {}
            found["inits"].append(seen)
            at.update(index=index, stage="construct")
            scaler = LossScaler(init_scale=init)
            at["stage"] = "get_scale"
            value = scaler.get_scale()
            seen["get_scale_repr"] = repr(value)[:200]
            at["stage"] = "get_scale_float"
            seen["get_scale"] = float(value)
            at["stage"] = "scale"
            loss = torch.tensor(0.75, requires_grad=True)
            scaled = scaler.scale(loss)
            seen["scaled_is_tensor"] = isinstance(scaled, torch.Tensor)
            if not seen["scaled_is_tensor"]:
                return
            seen["scaled"] = float(scaled)
            at["stage"] = "backward"
            scaled.backward()
            seen["grad"] = None if loss.grad is None else float(loss.grad)
        at.update(index=None, stage="disabled_construct")
        off = LossScaler(init_scale=disabled_init, enabled=False)
        at["stage"] = "disabled_scale"
        loss = torch.tensor(0.5)
        found["disabled"] = {"same_loss": off.scale(loss) is loss}
        at["stage"] = "disabled_get_scale"
        found["disabled"]["get_scale"] = float(off.get_scale())

    _, error = attempt(run, forbid)
    if error is not None:
        found["error"] = {**error, **at}
    return found


# --- fp32 master weights -------------------------------------------------------------------

MASTER_SIZES = (64, 24, 16, 10)
MASTER_STEPS = 40  # the longest master-weight run


@dataclass(frozen=True)
class MasterCase(_Request):
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


def master_runs(Wrapper: Any, cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The student's wrapper on every case; stops at the first case that raises."""
    return _runs(run_master, Wrapper, MasterCase, cases)


def master_structure(Wrapper: Any) -> dict[str, Any]:
    """What the wrapper holds around a small bf16 model with SGD inside, and one step of it."""
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to(torch.bfloat16)
    params = list(model.parameters())
    wrapper, error = attempt(lambda: Wrapper(model.parameters(), torch.optim.SGD, lr=0.1))
    if error is not None:
        return {"construct_error": error}
    found: dict[str, Any] = {"n_params": len(params)}
    masters, error = attempt(lambda: list(getattr(wrapper, "master_params", [])))
    if error is not None:
        found["error"] = {**error, "stage": "master_params"}
        return found
    found["n_masters"] = len(masters)
    if len(masters) != len(params):
        return found
    found["masters"] = []
    for p, m in zip(params, masters, strict=True):

        def look(p: torch.Tensor = p, m: Any = m) -> dict[str, bool]:
            new = m.dtype == torch.float32 and m.data_ptr() != p.data_ptr()
            return {"fp32_new": new, "equal": new and torch.equal(m, p.detach().float())}

        seen, error = attempt(look)
        if error is not None:
            found["error"] = {**error, "stage": "master_params"}
            return found
        found["masters"].append(seen)
    found["inner_is_sgd"] = isinstance(getattr(wrapper, "optimizer", None), torch.optim.SGD)
    before = list(model.parameters())
    _, error = attempt(lambda: model(torch.ones(2, 4, dtype=torch.bfloat16)).sum().backward())
    if error is not None:
        found["error"] = {**error, "stage": "backward"}
        return found
    _, error = attempt(lambda: (wrapper.step(), wrapper.zero_grad()))
    if error is not None:
        found["error"] = {**error, "stage": "step"}
        return found
    after = list(model.parameters())
    found["kept"] = len(after) == len(before) and all(
        p is q and q.dtype == torch.bfloat16 for p, q in zip(before, after, strict=True)
    )
    found["grads_cleared"] = not any(
        p.grad is not None and bool(p.grad.abs().max() != 0) for p in after
    )
    return found


# --- record_dtypes -------------------------------------------------------------------------


def build_model(layers: Sequence[Sequence[Any]]) -> nn.Sequential:
    """The ``nn.Sequential`` of ``getattr(nn, name)(*args)`` for each ``(name, *args)``."""
    return nn.Sequential(*(getattr(nn, name)(*args) for name, *args in layers))


def dtype_records(
    record_dtypes: Any, models: Sequence[dict[str, Any]], X: torch.Tensor, y: torch.Tensor
) -> list[dict[str, Any]]:
    """What ``record_dtypes`` returns for each model (its dtypes as names), or its error.

    Each model is ``{"layers", "state", "frozen", "dtype"}``: the layers for
    :func:`build_model`, the weights, the indices of the frozen layers, the autocast dtype.
    """
    found = []
    for spec in models:
        with torch.random.fork_rng():
            model = build_model(spec["layers"])
        model.load_state_dict(spec["state"])
        for i in spec["frozen"]:
            model[i].requires_grad_(False)

        def record(model: nn.Module = model, dtype: torch.dtype = spec["dtype"]) -> Any:
            return _dtype_tree(record_dtypes(model, X.clone(), y.clone(), dtype=dtype))

        tree, error = attempt(record)
        found.append({"error": error} if error is not None else {"record": tree})
    return found


def _dtype_tree(value: Any, depth: int = 0) -> Any:
    """``value`` as plain data: a dtype becomes ``{"dtype": "torch.float32"}``; dicts keep
    their string keys (and say what all their keys were); anything else is described."""
    if value is None:
        return None
    if isinstance(value, torch.dtype):
        return {"dtype": str(value)}
    if isinstance(value, dict) and depth < 2:
        try:
            keys = str(sorted(value))
        except Exception:
            keys = str(list(value))
        return {
            "dict": {k: _dtype_tree(v, depth + 1) for k, v in value.items() if isinstance(k, str)},
            "keys": keys[:500],
            "all_str": all(isinstance(k, str) for k in value),
        }
    try:
        text = str(value)[:200]
    except Exception:
        text = f"<{type(value).__name__}>"
    return {"other": text, "type": type(value).__name__}


# --- ulp -----------------------------------------------------------------------------------


def float_calls(function: Callable[..., Any], calls: Sequence[dict[str, Any]]) -> list[dict]:
    """``float(function(*args, **kwargs))`` for each call, or the error it raised."""
    outcomes = []
    for call in calls:

        def one(call: dict[str, Any] = call) -> float:
            return float(function(*call.get("args", ()), **call.get("kwargs", {})))

        value, error = attempt(one)
        outcomes.append({"error": error} if error is not None else {"value": value})
    return outcomes


# --- flat_adamw ----------------------------------------------------------------------------


def optimizer_runs(
    cls: Any, cases: Sequence[dict[str, Any]], batches: Sequence[Any], forbid: Sequence[str] = ()
) -> dict[str, Any]:
    """``core.produce.optimizer_runs`` with the ``forbid`` functions blocked during the runs;
    an error also names every class the exception is an instance of (``"bases"``)."""
    runs = []
    for index, case in enumerate(cases):
        try:
            with _steps_kept(cls), student_code(forbid):
                snapshots = run_case(cls, Case.from_dict(case), batches)
        except (Exception, SystemExit) as exc:
            bases = [f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__]
            return {"runs": runs, "error": {**describe_error(exc), "case": index, "bases": bases}}
        runs.append(snapshots)
    return {"runs": runs}


_MISSING = object()


@contextmanager
def _steps_kept(cls: Any) -> Iterator[None]:
    """Put back the ``step`` of ``cls`` and of the classes it extends after the block.

    torch.optim wraps ``type(optimizer).step`` in a profiling hook the first time it builds
    an optimizer of that class; a class that inherits a step switched off by ``forbid`` would
    keep the switched-off step for good.
    """
    classes = [c for c in getattr(cls, "__mro__", ()) if c is not object]
    saved = [(c, c.__dict__.get("step", _MISSING)) for c in classes]
    try:
        yield
    finally:
        for owner, step in saved:
            if owner.__dict__.get("step", _MISSING) is step:
                continue
            try:
                if step is _MISSING:
                    del owner.step
                else:
                    owner.step = step
            except (AttributeError, TypeError):
                continue


class _OpCounter(TorchDispatchMode):
    """Counts the tensor operations (ATen calls) made inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(FlatAdamW: Any, n_layers: int) -> int:
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(16, 16) for _ in range(n_layers)))
    opt = FlatAdamW(model.parameters(), lr=1e-3)
    X = torch.randn(8, 16)
    counts = []
    for _ in range(3):
        opt.zero_grad()
        model(X).square().mean().backward()
        with _OpCounter() as counter:
            opt.step()
        counts.append(counter.count)
    return counts[-1]


def flat_layout(FlatAdamW: Any) -> dict[str, Any]:
    """Where the parameters and gradients live after two steps, and how many tensor
    operations one step takes for models of 4 and of 40 parameter tensors."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    before = [p.detach().clone() for p in model.parameters()]

    def train() -> None:
        opt = FlatAdamW(model.parameters(), lr=0.01)
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(4, 8)).square().mean().backward()
            opt.step()

    _, error = attempt(train)
    if error is not None:
        return {"train_error": error}

    def look() -> dict[str, Any]:
        params = list(model.parameters())
        grads = [p.grad for p in params]
        return {
            "param_storages": len({p.untyped_storage().data_ptr() for p in params}),
            "unchanged": any(
                torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True)
            ),
            "grads_missing": any(g is None for g in grads),
            "grad_storages": len({g.untyped_storage().data_ptr() for g in grads if g is not None}),
        }

    found, error = attempt(look)
    if error is not None:
        return {"look_error": error}
    counts, error = attempt(lambda: [_ops_per_step(FlatAdamW, 2), _ops_per_step(FlatAdamW, 20)])
    if error is not None:
        found["ops_error"] = error
    else:
        found["ops"] = counts
    return found
