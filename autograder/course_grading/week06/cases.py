"""Trusted side: Week 6's cases and the references computed on them.

The references run here, in the grading process, where no student code runs: the same runs
as the student's code (:mod:`course_grading.week06.produce`) with ``torch.amp.GradScaler``,
fp32 master weights written out op by op, ``torch.optim.AdamW`` and autocast in its place.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from course_grading.core.runs import Case
from course_grading.week06.produce import (
    MasterCase,
    MasterRun,
    ScalerCase,
    ScalerRun,
    build_model,
    one_thread,
    run_master,
    run_scaler,
)

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def dtype_name(dtype: Any) -> str:
    """``fp32``, ``fp16``, ``bf16``, or the dtype as torch writes it."""
    return DTYPE_NAMES.get(dtype, str(dtype))


@contextmanager
def quiet() -> Iterator[None]:
    """No warnings from the reference runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --- ulp -------------------------------------------------------------------------------------

ULP_CASES: dict[str, list[tuple[float, torch.dtype, str]]] = {
    "basic": [
        (x, dtype, "an ordinary number")
        for dtype in (torch.float32, torch.float16, torch.bfloat16)
        for x in (1.0, 3.0, 0.75, 10.0, 1000.0, 0.1, 2.5e-3)
    ],
    "ranges": [
        (-1.0, torch.bfloat16, "a negative number"),
        (-300.0, torch.float16, "a negative number"),
        (60000.0, torch.float16, "a number near fp16's largest"),
        (1e30, torch.bfloat16, "a large number"),
        (1e30, torch.float32, "a large number"),
        (1e-20, torch.bfloat16, "a small number"),
        (3e-4, torch.float16, "a small number"),
        (1.0 - 1e-4, torch.bfloat16, "a number that rounds up to 1.0"),
        (1.0 - 1e-4, torch.float16, "a number that rounds up to 1.0"),
        (0.99999997, torch.float32, "a number that rounds up to 1.0"),
        (255.9, torch.bfloat16, "a number that rounds up to 256"),
    ],
}


def true_ulp(x: float, dtype: torch.dtype) -> float:
    """The gap between ``|x|`` rounded to ``dtype`` and the next larger number of ``dtype``."""
    v = torch.tensor(x, dtype=dtype).abs()
    up = torch.nextafter(v, torch.tensor(float("inf"), dtype=dtype))
    return float(up.double() - v.double())


# --- record_dtypes ---------------------------------------------------------------------------

# The layers of the checked models, as (torch.nn class, *arguments), built in this order from
# torch.manual_seed(6); the second has a frozen first layer.
_ARCHITECTURES: tuple[tuple[tuple[Any, ...], ...], ...] = (
    (("Linear", 64, 32), ("ReLU",), ("Linear", 32, 10)),
    (
        ("Linear", 64, 32),
        ("LayerNorm", 32),
        ("GELU",),
        ("Linear", 32, 16),
        ("Tanh",),
        ("Linear", 16, 10),
    ),
    (("Linear", 64, 48), ("Sigmoid",), ("Dropout", 0.0), ("Linear", 48, 10)),
)
_FROZEN: tuple[tuple[int, ...], ...] = ((), (0,), ())
# (what the message calls it, which architecture, the autocast dtype)
DTYPE_MODELS: tuple[tuple[str, int, torch.dtype], ...] = (
    ("a Linear-ReLU-Linear model under bf16 autocast", 0, torch.bfloat16),
    (
        "a model with LayerNorm, GELU and a frozen first layer under fp16 autocast",
        1,
        torch.float16,
    ),
    ("a Linear-Sigmoid-Dropout-Linear model under bf16 autocast", 2, torch.bfloat16),
    ("the Linear-ReLU-Linear model under fp16 autocast", 0, torch.float16),
)
DTYPE_PICKS = {"bf16": (0, 2), "models": (1, 3)}


@functools.cache
def _weights() -> tuple[dict[str, torch.Tensor], ...]:
    with torch.random.fork_rng():
        torch.manual_seed(6)
        models = [build_model(layers) for layers in _ARCHITECTURES]
    return tuple({k: v.detach().clone() for k, v in m.state_dict().items()} for m in models)


def dtype_model(index: int) -> dict[str, Any]:
    """Model ``index`` of :data:`DTYPE_MODELS` as the producer builds it."""
    _, arch, dtype = DTYPE_MODELS[index]
    return {
        "layers": [list(layer) for layer in _ARCHITECTURES[arch]],
        "state": dict(_weights()[arch]),
        "frozen": list(_FROZEN[arch]),
        "dtype": dtype,
    }


def dtype_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The batch every record_dtypes case runs on."""
    g = torch.Generator().manual_seed(0)
    X = torch.rand(16, 64, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    return X, y


def reference_dtypes(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, dtype: torch.dtype, device_type: str
) -> dict[str, Any]:
    """What autocast really does to this model: the dict ``record_dtypes`` must return."""
    record: dict[str, Any] = {
        "parameters": {n: p.dtype for n, p in model.named_parameters()},
        "activations": {},
    }
    hooks = []
    for name, module in model.named_modules():
        if name:

            def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                record["activations"][name] = out.dtype

            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.autocast(device_type, dtype=dtype):
            loss = F.cross_entropy(model(X), y)
    finally:
        for h in hooks:
            h.remove()
    record["loss"] = loss.dtype
    loss.backward()
    record["gradients"] = {
        n: (None if p.grad is None else p.grad.dtype) for n, p in model.named_parameters()
    }
    return record


def dtype_reference(spec: dict[str, Any], X: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """:func:`reference_dtypes` on the model of ``spec`` (built as the producer builds it)."""
    model = build_model(spec["layers"])
    model.load_state_dict(spec["state"])
    for i in spec["frozen"]:
        model[i].requires_grad_(False)
    return reference_dtypes(model, X.clone(), y.clone(), spec["dtype"], "cpu")


# --- loss_scaler -------------------------------------------------------------------------------

SCALER_DEFAULTS = {
    "init_scale": 2.0**16,
    "growth_factor": 2.0,
    "backoff_factor": 0.5,
    "growth_interval": 2000,
    "enabled": True,
}
# scale(): the init_scale values tried, and the one of the disabled scaler.
SCALE_INITS = (2.0**16, 1024.0, 3.0)
DISABLED_INIT = 1024.0

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


def grad_scaler(**kwargs: Any) -> Any:
    """The reference scaler: ``torch.amp.GradScaler`` on the CPU."""
    return torch.amp.GradScaler("cpu", **kwargs)


def scaler_references(cases: list[ScalerCase]) -> list[ScalerRun]:
    """GradScaler's runs of ``cases``."""
    with quiet(), one_thread():
        return [run_scaler(grad_scaler, case) for case in cases]


# --- master_weights ----------------------------------------------------------------------------

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


def master_references(cases: list[MasterCase]) -> list[MasterRun]:
    """The hand-written master weights' runs of ``cases``."""
    with quiet(), one_thread():
        return [run_master(ReferenceMaster, case) for case in cases]


# --- adamw_traffic -----------------------------------------------------------------------------

# (n_params, param_bytes, grad_bytes, state_bytes)
TRAFFIC_CALLS = (
    (1, 4, 4, 4),
    (1000, 2, 2, 4),
    (7, 2, 4, 4),
    (3, 4, 4, 2),
    (50_000_000, 4, 4, 4),
    (5, 8, 8, 8),
)


def step_bytes(n: int, param_bytes: int, grad_bytes: int, state_bytes: int) -> int:
    """What one AdamW step moves: p, m and v are read and written, the gradient is read."""
    return n * (2 * param_bytes + grad_bytes + 4 * state_bytes)


# --- flat_adamw --------------------------------------------------------------------------------

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
# The invalid constructor arguments, and the names one of which the ValueError must mention.
FLAT_INVALID = (
    ({"lr": -0.01}, ("lr", "learning rate")),
    ({"eps": -1e-8}, ("eps", "epsilon")),
    ({"betas": (1.0, 0.999)}, ("beta",)),
    ({"betas": (0.9, -0.1)}, ("beta",)),
    ({"weight_decay": -0.1}, ("weight_decay", "weight decay")),
)
# step(): at most this many more tensor operations for 40 parameter tensors than for 4.
FLAT_OPS_SLACK = 2
