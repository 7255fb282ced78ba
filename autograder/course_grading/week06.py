"""Hidden checks for Week 6: number formats, autocast, loss scaling, master weights, and the
memory-bound AdamW step.

Exercise ids (grade ids in the notebook start with them): ``ulp``, ``record_dtypes``,
``loss_scaler``, ``master_weights``, ``adamw_traffic``, ``flat_adamw``. The notebook calls every
check from this module; the loss scaler and master weights live in ``week06_scaling``, the flat
AdamW in ``week06_flat``, the runs they compare in ``week06_runs``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from course_grading.compare import CheckFailed
from course_grading.week06_flat import (
    check_flat_adamw_basic,
    check_flat_adamw_flat,
    check_flat_adamw_groups_frozen,
    check_flat_adamw_options,
)
from course_grading.week06_runs import quiet
from course_grading.week06_scaling import (
    check_loss_scaler_growth,
    check_loss_scaler_scale,
    check_loss_scaler_skip,
    check_loss_scaler_unscale,
    check_master_weights_basic,
    check_master_weights_frozen,
)

__all__ = [
    "check_ulp_basic",
    "check_ulp_ranges",
    "check_record_dtypes_bf16",
    "check_record_dtypes_models",
    "check_loss_scaler_scale",
    "check_loss_scaler_skip",
    "check_loss_scaler_growth",
    "check_loss_scaler_unscale",
    "check_master_weights_basic",
    "check_master_weights_frozen",
    "check_adamw_step_bytes",
    "check_flat_adamw_basic",
    "check_flat_adamw_options",
    "check_flat_adamw_groups_frozen",
    "check_flat_adamw_flat",
]

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _name(dtype: Any) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype))


# --- ulp -------------------------------------------------------------------------------------


def _true_ulp(x: float, dtype: torch.dtype) -> float:
    v = torch.tensor(x, dtype=dtype).abs()
    up = torch.nextafter(v, torch.tensor(float("inf"), dtype=dtype))
    return float(up.double() - v.double())


def _check_ulp_values(ulp: Callable[..., Any], cases: list[tuple[float, torch.dtype, str]]) -> None:
    __tracebackhide__ = True
    for x, dtype, what in cases:
        expected = _true_ulp(x, dtype)
        try:
            with quiet():
                got = float(ulp(x, dtype))
        except Exception as exc:
            raise CheckFailed(
                f"ulp({x!r}, torch.{dtype}) raised {type(exc).__name__}: {exc}"
            ) from None
        if got == expected:
            continue
        message = (
            f"for {what} ({x!r} in {_name(dtype)}), ulp gave {got!r}; the gap to the next "
            f"{_name(dtype)} number is {expected!r}."
        )
        eps = torch.finfo(dtype).eps
        rounded = abs(float(torch.tensor(x, dtype=dtype)))
        _, e = math.frexp(abs(x))
        hints = [
            (
                2 * expected,
                "it is twice too large: frexp's mantissa lies in [0.5, 1), so "
                "|x| = m * 2**e has the spacing 2**(e - 1) * eps.",
            ),
            (
                eps * abs(x),
                "that is eps * |x|, a relative size: the spacing is a power of two, "
                "the same for every number between two powers of two.",
            ),
            (
                eps * rounded,
                "that is eps * |x|, a relative size: the spacing is a power of two, "
                "the same for every number between two powers of two.",
            ),
            (eps, "that is eps itself, the spacing at 1.0 only: scale it by x's power of two."),
            (
                2.0 ** (e - 1) * eps,
                "that is the spacing at x before rounding it to "
                f"{_name(dtype)}: round x to the format first (it may round up to the next "
                "power of two).",
            ),
        ]
        for value, hint in hints:
            if got == value and value != expected:
                message += f" This looks like a typical mistake: {hint}"
                break
        raise CheckFailed(message)


def check_ulp_basic(ulp: Callable[..., Any]) -> None:
    """The spacing at ordinary numbers in fp32, fp16 and bf16."""
    __tracebackhide__ = True
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for x in (1.0, 3.0, 0.75, 10.0, 1000.0, 0.1, 2.5e-3):
            cases.append((x, dtype, "an ordinary number"))
    _check_ulp_values(ulp, cases)


def check_ulp_ranges(ulp: Callable[..., Any]) -> None:
    """Negative numbers, large and small ones, and values that round up to a power of two."""
    __tracebackhide__ = True
    cases = [
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
    ]
    _check_ulp_values(ulp, cases)


# --- record_dtypes -------------------------------------------------------------------------


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


def _dtype_models() -> list[tuple[str, nn.Module, torch.dtype, int]]:
    torch.manual_seed(6)
    first = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    second = nn.Sequential(
        nn.Linear(64, 32),
        nn.LayerNorm(32),
        nn.GELU(),
        nn.Linear(32, 16),
        nn.Tanh(),
        nn.Linear(16, 10),
    )
    second[0].requires_grad_(False)
    third = nn.Sequential(nn.Linear(64, 48), nn.Sigmoid(), nn.Dropout(0.0), nn.Linear(48, 10))
    return [
        ("a Linear-ReLU-Linear model under bf16 autocast", first, torch.bfloat16, 0),
        (
            "a model with LayerNorm, GELU and a frozen first layer under fp16 autocast",
            second,
            torch.float16,
            1,
        ),
        ("a Linear-Sigmoid-Dropout-Linear model under bf16 autocast", third, torch.bfloat16, 2),
        ("the Linear-ReLU-Linear model under fp16 autocast", first, torch.float16, 3),
    ]


def _dtype_str(d: Any) -> str:
    return "None" if d is None else _name(d)


def _compare_dtypes(got: Any, want: dict[str, Any], what: str, dtype: torch.dtype) -> None:
    __tracebackhide__ = True
    if not isinstance(got, dict) or set(got) != set(want):
        keys = sorted(got) if isinstance(got, dict) else type(got).__name__
        raise CheckFailed(
            f"record_dtypes should return a dict with the keys {sorted(want)}; got {keys}."
        )
    if got["loss"] != want["loss"]:
        hint = ""
        if got["loss"] == dtype:
            hint = (
                f" This looks like a typical mistake: the loss was computed outside the autocast "
                f"block, from {_name(dtype)} logits; compute it inside, as the AMP recipe does "
                "(cross_entropy then runs in fp32)."
            )
        raise CheckFailed(
            f"for {what}, the loss's dtype is {_dtype_str(want['loss'])}, but record_dtypes "
            f"says {_dtype_str(got['loss'])}.{hint}"
        )
    for key in ("parameters", "activations", "gradients"):
        mine, theirs = got[key], want[key]
        if not isinstance(mine, dict) or set(mine) != set(theirs):
            names = sorted(mine) if isinstance(mine, dict) else type(mine).__name__
            raise CheckFailed(
                f"for {what}, record_dtypes()['{key}'] should have the names {sorted(theirs)}; "
                f"got {names}."
            )
        for name, expected in theirs.items():
            if mine[name] != expected:
                hint = ""
                if key == "activations" and all(v == torch.float32 for v in mine.values()):
                    hint = " Every activation is fp32: run the forward pass inside torch.autocast."
                elif key == "gradients" and expected is None:
                    hint = " A frozen parameter has no gradient: record None for it."
                elif key == "gradients":
                    hint = " Record the gradients after loss.backward()."
                raise CheckFailed(
                    f"for {what}, {key[:-1]} '{name}' is {_dtype_str(expected)} under autocast, "
                    f"but record_dtypes says {_dtype_str(mine[name])}.{hint}"
                )


def _check_dtypes(record_dtypes: Callable[..., Any], picks: tuple[int, ...]) -> None:
    __tracebackhide__ = True
    g = torch.Generator().manual_seed(0)
    X = torch.rand(16, 64, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    models = _dtype_models()
    for index in picks:
        what, model, dtype, _ = models[index]
        want = reference_dtypes(copy.deepcopy(model), X, y, dtype, "cpu")
        try:
            with quiet():
                got = record_dtypes(copy.deepcopy(model), X.clone(), y.clone(), dtype=dtype)
        except Exception as exc:
            raise CheckFailed(
                f"for {what}, record_dtypes raised {type(exc).__name__}: {exc}"
            ) from None
        _compare_dtypes(got, want, what, dtype)


def check_record_dtypes_bf16(record_dtypes: Callable[..., Any]) -> None:
    """Two models under bf16 autocast on the CPU."""
    __tracebackhide__ = True
    _check_dtypes(record_dtypes, (0, 2))


def check_record_dtypes_models(record_dtypes: Callable[..., Any]) -> None:
    """fp16 autocast, LayerNorm and GELU, and a frozen layer."""
    __tracebackhide__ = True
    _check_dtypes(record_dtypes, (1, 3))


# --- adamw_traffic -------------------------------------------------------------------------


def check_adamw_step_bytes(adamw_step_bytes: Callable[..., Any]) -> None:
    """Bytes moved per AdamW step for several sizes and precisions."""
    __tracebackhide__ = True
    for n, pb, gb, sb in (
        (1, 4, 4, 4),
        (1000, 2, 2, 4),
        (7, 2, 4, 4),
        (3, 4, 4, 2),
        (50_000_000, 4, 4, 4),
        (5, 8, 8, 8),
    ):
        expected = n * (2 * pb + gb + 4 * sb)
        try:
            got = adamw_step_bytes(n, param_bytes=pb, grad_bytes=gb, state_bytes=sb)
        except Exception as exc:
            raise CheckFailed(f"adamw_step_bytes raised {type(exc).__name__}: {exc}") from None
        if got == expected:
            continue
        args = f"adamw_step_bytes({n}, param_bytes={pb}, grad_bytes={gb}, state_bytes={sb})"
        message = f"{args} returned {got!r}; expected {expected}."
        hints = {
            n * (pb + gb + 2 * sb): "you counted the reads only; p, m and v are written back.",
            n * (2 * pb + 2 * gb + 4 * sb): "the gradient is only read by the step.",
            n * (2 * pb + gb + 2 * sb): "m and v are each read and written.",
            n * (2 * pb + 4 * sb): "the step also reads the gradient.",
            28 * n: "use the byte sizes you are given, not fp32's.",
        }
        for value, hint in hints.items():
            if got == value and value != expected:
                message += f" This looks like a typical mistake: {hint}"
                break
        raise CheckFailed(message)
