"""Hidden checks for Week 6's loss scaler (against ``torch.amp.GradScaler``) and fp32 master
weights (against fp32 copies stepped by hand), run by ``course_grading.week06``."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from course_grading.compare import CheckFailed
from course_grading.week06_mistakes import LOSS_SCALER_MISTAKES, MASTER_WEIGHTS_MISTAKES
from course_grading.week06_runs import (
    MASTER_CASES,
    SCALER_CASES,
    MasterCase,
    MasterRun,
    ScalerCase,
    ScalerRun,
    one_thread,
    quiet,
    references,
    run_master,
    run_scaler,
)

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

# --- loss_scaler ---------------------------------------------------------------------------

SCALER_DEFAULTS = {
    "init_scale": 2.0**16,
    "growth_factor": 2.0,
    "backoff_factor": 0.5,
    "growth_interval": 2000,
    "enabled": True,
}


def _require_own_scaler(LossScaler: Any) -> None:
    __tracebackhide__ = True
    if not isinstance(LossScaler, type):
        raise CheckFailed(f"LossScaler must be a class, but it is {type(LossScaler).__name__}.")
    if issubclass(LossScaler, torch.amp.GradScaler):
        raise CheckFailed("LossScaler extends torch.amp.GradScaler: write the scaler yourself.")


@contextlib.contextmanager
def _forbid_grad_scaler() -> Iterator[None]:
    """Within the block, any use of torch's GradScaler machinery fails the check."""

    def refuse(label: str) -> Callable[..., Any]:
        def blocked(*_args: Any, **_kwargs: Any) -> None:
            __tracebackhide__ = True
            raise CheckFailed(f"LossScaler called {label}: the scaler must be your own code.")

        return blocked

    saved: list[tuple[Any, str, Any]] = []
    for name in ("scale", "unscale_", "step", "update", "__init__"):
        saved.append((torch.amp.GradScaler, name, torch.amp.GradScaler.__dict__[name]))
        setattr(torch.amp.GradScaler, name, refuse(f"torch.amp.GradScaler.{name}"))
    for name in ("_amp_update_scale_", "_amp_foreach_non_finite_check_and_unscale_"):
        saved.append((torch, name, getattr(torch, name)))
        setattr(torch, name, refuse(f"torch.{name}"))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def _student_scaler_run(LossScaler: Any, case: ScalerCase) -> ScalerRun:
    __tracebackhide__ = True
    try:
        with _forbid_grad_scaler(), quiet(), one_thread():
            return run_scaler(LossScaler, case)
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(
            f"[{case.name}] your LossScaler raised {type(exc).__name__}: {exc}"
        ) from None


def _iteration_note(case: ScalerCase, t: int, ref: ScalerRun) -> str:
    if t in case.inject_nan:
        return " (at this iteration one gradient was NaN)"
    if t in case.inject_inf:
        return " (at this iteration one gradient was inf)"
    if t in case.unscale_at:
        return " (this iteration called unscale_() and clipped before step())"
    if not ref.stepped[t]:
        return " (at this iteration the fp16 backward pass overflowed)"
    return ""


def _params_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    for name, expected in b.items():
        actual = a[name]
        if not torch.allclose(actual, expected, rtol=1e-5, atol=1e-7, equal_nan=True):
            return name
    return None


def _scaler_difference(student: ScalerRun, ref: ScalerRun, case: ScalerCase) -> str | None:
    for t in range(len(ref.scales)):
        note = _iteration_note(case, t, ref)
        if student.stepped[t] != ref.stepped[t]:
            if ref.stepped[t]:
                return f"at iteration {t + 1}{note}, GradScaler stepped but your scaler skipped."
            return (
                f"at iteration {t + 1}{note}, GradScaler skipped the optimizer step (a gradient "
                "was inf or NaN) but your scaler let it step."
            )
        if not math.isclose(student.scales[t], ref.scales[t], rel_tol=1e-6):
            return (
                f"after update() at iteration {t + 1}{note}, GradScaler's scale is "
                f"{ref.scales[t]:g} but yours is {student.scales[t]:g}."
            )
        name = _params_close(student.params[t], ref.params[t])
        if name is not None:
            return (
                f"after iteration {t + 1}{note}, parameter '{name}' differs from the run with "
                "GradScaler, although the scales and skipped steps agree."
            )
    return None


def _check_scaler(LossScaler: Any, cases: list[ScalerCase]) -> None:
    __tracebackhide__ = True
    _require_own_scaler(LossScaler)
    for case in cases:
        ref = references()[("scaler", case.name)]
        student = _student_scaler_run(LossScaler, case)
        problem = _scaler_difference(student, ref, case)
        if problem is None:
            continue
        message = f"[{case.name}] {problem}"
        with quiet(), one_thread():
            for mistake in LOSS_SCALER_MISTAKES:
                wrong = run_scaler(mistake.factory, case)
                if _scaler_difference(student, wrong, case) is None:
                    message += f" This looks like a typical mistake: {mistake.sentence}"
                    break
        raise CheckFailed(message)


def check_loss_scaler_scale(LossScaler: Any) -> None:
    """Constructor defaults as GradScaler's, scale(), get_scale(), and enabled=False."""
    __tracebackhide__ = True
    _require_own_scaler(LossScaler)
    try:
        params = inspect.signature(LossScaler).parameters
    except (TypeError, ValueError):
        params = {}
    for name, default in SCALER_DEFAULTS.items():
        if name not in params:
            raise CheckFailed(f"LossScaler's constructor should take `{name}`, as GradScaler's.")
        if params[name].default != default:
            raise CheckFailed(
                f"LossScaler's default {name} should be {default!r}, as GradScaler's; yours is "
                f"{params[name].default!r}."
            )
    with _forbid_grad_scaler(), quiet():
        for init in (2.0**16, 1024.0, 3.0):
            scaler = LossScaler(init_scale=init)
            if float(scaler.get_scale()) != init:
                raise CheckFailed(
                    f"LossScaler(init_scale={init:g}).get_scale() should be {init:g}, got "
                    f"{scaler.get_scale()!r}."
                )
            loss = torch.tensor(0.75, requires_grad=True)
            scaled = scaler.scale(loss)
            if not isinstance(scaled, torch.Tensor) or float(scaled) != 0.75 * init:
                raise CheckFailed(
                    f"with init_scale={init:g}, scale(loss) should return loss * {init:g}."
                )
            scaled.backward()
            if loss.grad is None or float(loss.grad) != init:
                raise CheckFailed("scale(loss) must keep the loss in the autograd graph.")
        off = LossScaler(init_scale=1024.0, enabled=False)
        loss = torch.tensor(0.5)
        if off.scale(loss) is not loss or float(off.get_scale()) != 1.0:
            raise CheckFailed(
                "with enabled=False, scale(loss) should return the loss itself and get_scale() "
                "1.0, as GradScaler does."
            )


def check_loss_scaler_skip(LossScaler: Any) -> None:
    """Overflowing fp16 runs with inf and NaN gradients: which steps are skipped, the backoff."""
    __tracebackhide__ = True
    _check_scaler(LossScaler, SCALER_CASES["skip"])


def check_loss_scaler_growth(LossScaler: Any) -> None:
    """Growth after growth_interval clean steps, its counter, other factors, a long run."""
    __tracebackhide__ = True
    _check_scaler(LossScaler, SCALER_CASES["growth"])


def check_loss_scaler_unscale(LossScaler: Any) -> None:
    """unscale_() before step() (to clip), and a disabled scaler."""
    __tracebackhide__ = True
    _check_scaler(LossScaler, SCALER_CASES["unscale"])


# --- master_weights ------------------------------------------------------------------------


def _student_master_run(Wrapper: Any, case: MasterCase) -> MasterRun:
    __tracebackhide__ = True
    try:
        with quiet(), one_thread():
            return run_master(Wrapper, case)
    except Exception as exc:
        raise CheckFailed(
            f"[{case.name}] your MasterWeightOptimizer raised {type(exc).__name__}: {exc}"
        ) from None


def _master_difference(student: MasterRun, ref: MasterRun, dtype: str) -> str | None:
    for t, (params, masters, want) in enumerate(
        zip(student.params, student.masters, ref.masters, strict=True)
    ):
        if set(masters) != set(want):
            return (
                f"master_params should hold one fp32 copy of every parameter, in order "
                f"({len(want)} of them); yours holds {len(masters)}."
            )
        for name, expected in want.items():
            mine = masters[name]
            if mine.dtype != torch.float32 or mine.shape != expected.shape:
                return f"the master copy of '{name}' should be an fp32 tensor of its shape."
            if not torch.allclose(mine, expected, rtol=1e-6, atol=1e-8, equal_nan=True):
                return (
                    f"after step {t + 1}, the master copy of '{name}' differs from fp32 master "
                    "weights (fp32 copies, gradients cast to fp32, the inner optimizer stepping "
                    "the copies, the result written back)."
                )
        low = getattr(torch, dtype)
        for name, p in params.items():
            if not torch.equal(p, masters[name].to(low).float()):
                return (
                    f"after step {t + 1}, the model's parameter '{name}' is not its master copy "
                    f"rounded to {DTYPE_NAMES[low]}."
                )
    return None


def _check_master(Wrapper: Any, cases: list[MasterCase]) -> None:
    __tracebackhide__ = True
    if not isinstance(Wrapper, type):
        raise CheckFailed("MasterWeightOptimizer must be a class.")
    for case in cases:
        ref = references()[("master", case.name)]
        student = _student_master_run(Wrapper, case)
        problem = _master_difference(student, ref, case.dtype)
        if problem is None:
            continue
        message = f"[{case.name}] {problem}"
        with quiet(), one_thread():
            for mistake in MASTER_WEIGHTS_MISTAKES:
                wrong = run_master(mistake.factory, case)
                if _same_master_run(student, wrong):
                    message += f" This looks like a typical mistake: {mistake.sentence}"
                    break
        raise CheckFailed(message)


def _same_master_run(a: MasterRun, b: MasterRun) -> bool:
    for pa, pb, ma, mb in zip(a.params, b.params, a.masters, b.masters, strict=True):
        if set(ma) != set(mb):
            return False
        if _params_close(pa, pb) is not None or _params_close(ma, mb) is not None:
            return False
    return True


def _check_master_structure(Wrapper: Any) -> None:
    __tracebackhide__ = True
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to(torch.bfloat16)
    params = list(model.parameters())
    try:
        with quiet():
            wrapper = Wrapper(model.parameters(), torch.optim.SGD, lr=0.1)
    except Exception as exc:
        raise CheckFailed(
            "MasterWeightOptimizer(model.parameters(), torch.optim.SGD, lr=0.1) raised "
            f"{type(exc).__name__}: {exc}"
        ) from None
    masters = list(getattr(wrapper, "master_params", []))
    if len(masters) != len(params):
        raise CheckFailed(
            "MasterWeightOptimizer.master_params should be a list with one fp32 copy per "
            "parameter (given a generator, as model.parameters() is, too)."
        )
    for p, m in zip(params, masters, strict=True):
        if m.dtype != torch.float32 or m.data_ptr() == p.data_ptr():
            raise CheckFailed("each master copy should be a new fp32 tensor, not the parameter.")
        if not torch.equal(m, p.detach().float()):
            raise CheckFailed("each master copy should start equal to its parameter.")
    inner = getattr(wrapper, "optimizer", None)
    if not isinstance(inner, torch.optim.SGD):
        raise CheckFailed(
            "MasterWeightOptimizer.optimizer should be the inner optimizer, built as "
            "optimizer_cls(master_params, **optimizer_kwargs)."
        )
    before = [p for p in model.parameters()]
    model(torch.ones(2, 4, dtype=torch.bfloat16)).sum().backward()
    with quiet():
        wrapper.step()
        wrapper.zero_grad()
    for p, q in zip(before, model.parameters(), strict=True):
        if p is not q or q.dtype != torch.bfloat16:
            raise CheckFailed(
                "the model must keep its own bf16 parameters (the same tensors, updated in place)."
            )
    if any(p.grad is not None and p.grad.abs().max() != 0 for p in model.parameters()):
        raise CheckFailed("zero_grad() should clear the model's gradients (set them to None).")


def check_master_weights_basic(MasterWeightOptimizer: Any) -> None:
    """Structure, then SGD and AdamW as inner optimizers on bf16 and fp16 models."""
    __tracebackhide__ = True
    _check_master_structure(MasterWeightOptimizer)
    _check_master(MasterWeightOptimizer, MASTER_CASES["basic"])


def check_master_weights_frozen(MasterWeightOptimizer: Any) -> None:
    """A frozen layer (no gradient) under AdamW with weight decay, and a long SGD run."""
    __tracebackhide__ = True
    _check_master(MasterWeightOptimizer, MASTER_CASES["frozen"])
