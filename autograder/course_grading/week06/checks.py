"""Trusted side: Week 6's hidden checks, by test cell.

Exercise ids (grade ids in the notebook start with them): ``ulp``, ``record_dtypes``,
``loss_scaler``, ``master_weights``, ``adamw_traffic``, ``flat_adamw``.

Switched off in the sandbox: ``torch.amp``'s GradScaler (``HIDDEN_TORCH``), which would
answer ``loss_scaler``. ``torch.optim`` stays on: the loss-scaler runs step
``torch.optim.SGD``, the master-weight runs wrap SGD and AdamW, and visible checks compare with
``torch.optim.AdamW``. Blocked only while the student's code runs in a producer (``forbid=``):
GradScaler and its ATen routines under the student's scaler (:data:`SCALER_FORBID`), and
``torch.optim``'s update code under the student's FlatAdamW (:func:`optim_forbid`).
"""

from __future__ import annotations

import functools
import importlib
import math
import pkgutil
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from course_grading.core.checks import CheckFailed, Checks, Part, error_text
from course_grading.core.interface import judge_value_error, own_class, signature
from course_grading.core.optimizers import OptimizerSpec, against_torch
from course_grading.core.references import TORCH_DEFAULTS
from course_grading.core.runs import Case
from course_grading.core.torch_hiding import OPTIMIZER_OPS, OPTIMIZER_REASON
from course_grading.week06 import cases
from course_grading.week06.cases import DTYPE_NAMES, dtype_name
from course_grading.week06.mistakes import (
    FLAT_ADAMW_MISTAKES,
    LOSS_SCALER_MISTAKES,
    MASTER_WEIGHTS_MISTAKES,
    traffic_mistakes,
    ulp_mistakes,
)
from course_grading.week06.produce import (
    MasterCase,
    MasterRun,
    ScalerCase,
    ScalerRun,
    one_thread,
    run_master,
    run_scaler,
)

SCALER_REASON = "the scaler must be your own code, not torch.amp's GradScaler."
HIDDEN_TORCH = {
    "torch.amp.grad_scaler": SCALER_REASON,
    # Their GradScalers extend torch.amp's.
    "torch.cuda.amp.grad_scaler": SCALER_REASON,
    "torch.cpu.amp.grad_scaler": SCALER_REASON,
}
DEMONSTRATIONS = {
    "w06-scaler-run-code": "your scaler training in fp16 (about 0.4 s)",
    "w06-master-run-code": "bf16 training with and without fp32 master weights (about 0.7 s)",
}
# GradScaler's own kernels, and the fused kernels that would be a whole AdamW step in one call
# (torch.optim stays on: the week's runs and checks use torch's SGD and AdamW).
HIDDEN_OPS = {
    "_amp_update_scale_": SCALER_REASON,
    "_amp_foreach_non_finite_check_and_unscale_": SCALER_REASON,
    "_fused_adam_": OPTIMIZER_REASON,
    "_fused_adamw_": OPTIMIZER_REASON,
}
# Blocked while the student's scaler runs: GradScaler and its ATen routines (switched off in
# the sandbox too; this says what was called, as the feedback always has).
SCALER_FORBID = (
    *(
        f"torch.amp.GradScaler.{name}"
        for name in ("scale", "unscale_", "step", "update", "__init__")
    ),
    "torch._amp_update_scale_",
    "torch._amp_foreach_non_finite_check_and_unscale_",
)

# torch.optim.AdamW's keywords and defaults, and the four it takes that change only how the
# step is computed: the typical-mistake rules run with all of them.
ADAMW_DEFAULTS = {
    **TORCH_DEFAULTS["AdamW"],
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
}
# A frozen case that raises one of these gets the hint to leave frozen parameters out.
_FROZEN_ERRORS = ("builtins.AttributeError", "builtins.TypeError", "builtins.RuntimeError")


def checks() -> Checks:
    """Every test cell's hidden check."""
    return {
        "ulp_test_basic": [ulp("basic")],
        "ulp_test_ranges": [ulp("ranges")],
        "record_dtypes_test_bf16": [record_dtypes("bf16")],
        "record_dtypes_test_models": [record_dtypes("models")],
        "loss_scaler_test_scale": [own_scaler(), scaler_signature(), scaler_basics()],
        "loss_scaler_test_skip": [own_scaler(), scaler_runs("skip")],
        "loss_scaler_test_growth": [own_scaler(), scaler_runs("growth")],
        "loss_scaler_test_unscale": [own_scaler(), scaler_runs("unscale")],
        "master_weights_test_basic": [master_structure(), master_class(), master_runs("basic")],
        "master_weights_test_frozen": [master_class(), master_runs("frozen")],
        "adamw_traffic_test": [adamw_traffic()],
        "flat_adamw_test_basic": [
            own_class("FlatAdamW"),
            signature("FlatAdamW", TORCH_DEFAULTS["AdamW"], "torch.optim.AdamW"),
            flat_runs("basic"),
        ],
        "flat_adamw_test_options": [
            own_class("FlatAdamW"),
            flat_runs("options"),
            flat_value_errors(),
        ],
        "flat_adamw_test_groups_frozen": [own_class("FlatAdamW"), flat_runs("groups")],
        "flat_adamw_test_flat": [flat_layout()],
    }


# --- ulp -------------------------------------------------------------------------------------


def ulp(kind: str) -> Part:
    """The exact spacing at each of the kind's numbers (``float(ulp(x, dtype))``)."""
    ulp_cases = cases.ULP_CASES[kind]
    return Part(
        "week06.produce:float_calls",
        judge_ulp,
        inputs={"calls": [{"args": [x, dtype]} for x, dtype, _ in ulp_cases]},
        reference=lambda: [cases.true_ulp(x, dtype) for x, dtype, _ in ulp_cases],
        context={"cases": ulp_cases},
    )


def judge_ulp(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`ulp`."""

    def wrong(case: tuple[float, torch.dtype, str], got: float, expected: float) -> str:
        x, dtype, what = case
        return (
            f"for {what} ({x!r} in {dtype_name(dtype)}), ulp gave {got!r}; the gap to the next "
            f"{dtype_name(dtype)} number is {expected!r}."
        )

    _judge_exact_values(
        part.context["cases"],
        part.expected,
        outcomes,
        call=lambda case: f"ulp({case[0]!r}, torch.{case[1]})",
        wrong=wrong,
        mistakes=lambda case, expected: ulp_mistakes(case[0], case[1], expected),
    )


def _judge_exact_values(
    calls: Sequence[Any],
    expected: Sequence[Any],
    outcomes: list[dict[str, Any]],
    call: Callable[[Any], str],
    wrong: Callable[[Any, Any, Any], str],
    mistakes: Callable[[Any, Any], Iterable[tuple[Any, str]]],
) -> None:
    """Each call returned exactly its expected value.

    ``call(c)`` names the call in an error, ``wrong(c, got, expected)`` says what is wrong;
    ``mistakes(c, expected)`` are (the value a typical mistake gives, what it means), in the
    order the feedback tries them.
    """
    for c, want, outcome in zip(calls, expected, outcomes, strict=True):
        if outcome.get("error"):
            raise CheckFailed(f"{call(c)} raised {error_text(outcome['error'])}")
        got = outcome["value"]
        if got == want:
            continue
        message = wrong(c, got, want)
        for value, hint in mistakes(c, want):
            if got == value and value != want:
                message += f" This looks like a typical mistake: {hint}"
                break
        raise CheckFailed(message)


# --- record_dtypes -----------------------------------------------------------------------------


def record_dtypes(kind: str) -> Part:
    """The dtypes autocast gives each of the kind's models, as ``reference_dtypes`` finds."""
    picks = cases.DTYPE_PICKS[kind]
    models = [cases.dtype_model(i) for i in picks]
    X, y = cases.dtype_inputs()
    return Part(
        "week06.produce:dtype_records",
        judge_record_dtypes,
        inputs={"models": models, "X": X, "y": y},
        reference=lambda: [cases.dtype_reference(m, X, y) for m in models],
        context={"models": [(cases.DTYPE_MODELS[i][0], cases.DTYPE_MODELS[i][2]) for i in picks]},
    )


def judge_record_dtypes(part: Part, found: list[dict[str, Any]]) -> None:
    """See :func:`record_dtypes`."""
    for (what, dtype), want, outcome in zip(
        part.context["models"], part.expected, found, strict=True
    ):
        if outcome.get("error"):
            raise CheckFailed(f"for {what}, record_dtypes raised {error_text(outcome['error'])}")
        _compare_dtypes(outcome["record"], want, what, dtype)


def _is_dict(tree: Any) -> bool:
    return isinstance(tree, dict) and "dict" in tree


def _type_name(tree: Any) -> str:
    """The type of the student's value that ``tree`` describes."""
    if tree is None:
        return "NoneType"
    if "dtype" in tree:
        return "dtype"
    if _is_dict(tree):
        return "dict"
    return str(tree["type"])


def _same(tree: Any, dtype: torch.dtype | None) -> bool:
    """Whether the student's value described by ``tree`` is ``dtype`` (or None)."""
    if dtype is None:
        return tree is None
    return isinstance(tree, dict) and tree.get("dtype") == str(dtype)


def _shown(tree: Any) -> str:
    """The student's value as the message shows it (fp32, bf16, None, ...)."""
    if tree is None:
        return "None"
    if "dtype" in tree:
        name = str(tree["dtype"])
        return next((short for d, short in DTYPE_NAMES.items() if str(d) == name), name)
    if _is_dict(tree):
        return "a dict"
    return str(tree["other"])


def _want_str(dtype: torch.dtype | None) -> str:
    return "None" if dtype is None else dtype_name(dtype)


def _compare_dtypes(got: Any, want: dict[str, Any], what: str, dtype: torch.dtype) -> None:
    if not _is_dict(got) or not got["all_str"] or set(got["dict"]) != set(want):
        keys = got["keys"] if _is_dict(got) else _type_name(got)
        raise CheckFailed(
            f"record_dtypes should return a dict with the keys {sorted(want)}; got {keys}."
        )
    items = got["dict"]
    if not _same(items["loss"], want["loss"]):
        hint = ""
        if _same(items["loss"], dtype):
            hint = (
                f" This looks like a typical mistake: the loss was computed outside the autocast "
                f"block, from {dtype_name(dtype)} logits; compute it inside, as the AMP recipe "
                "does (cross_entropy then runs in fp32)."
            )
        raise CheckFailed(
            f"for {what}, the loss's dtype is {_want_str(want['loss'])}, but record_dtypes "
            f"says {_shown(items['loss'])}.{hint}"
        )
    for key in ("parameters", "activations", "gradients"):
        mine, theirs = items[key], want[key]
        if not _is_dict(mine) or not mine["all_str"] or set(mine["dict"]) != set(theirs):
            names = mine["keys"] if _is_dict(mine) else _type_name(mine)
            raise CheckFailed(
                f"for {what}, record_dtypes()['{key}'] should have the names {sorted(theirs)}; "
                f"got {names}."
            )
        values = mine["dict"]
        for name, expected in theirs.items():
            if _same(values[name], expected):
                continue
            hint = ""
            if key == "activations" and all(_same(v, torch.float32) for v in values.values()):
                hint = " Every activation is fp32: run the forward pass inside torch.autocast."
            elif key == "gradients" and expected is None:
                hint = " A frozen parameter has no gradient: record None for it."
            elif key == "gradients":
                hint = " Record the gradients after loss.backward()."
            raise CheckFailed(
                f"for {what}, {key[:-1]} '{name}' is {_want_str(expected)} under autocast, "
                f"but record_dtypes says {_shown(values[name])}.{hint}"
            )


# --- loss_scaler -------------------------------------------------------------------------------


@functools.cache
def _grad_scalers() -> frozenset[str]:
    """The qualified names of torch's GradScaler classes (their stubs keep them)."""
    found = set()
    for module_name in HIDDEN_TORCH:
        module = importlib.import_module(module_name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, torch.amp.GradScaler):
                found.add(f"{obj.__module__}.{obj.__qualname__}")
    return frozenset(found)


def own_scaler() -> Part:
    """``LossScaler`` is a class that is not, and does not extend, torch's GradScaler."""
    return Part("core.produce:lineage", judge_own_scaler)


def judge_own_scaler(part: Part, found: dict[str, Any]) -> None:
    """See :func:`own_scaler`."""
    if not found["is_class"]:
        raise CheckFailed(f"LossScaler must be a class, but it is {found['type']}.")
    if any(name in _grad_scalers() for name in found["mro"]):
        raise CheckFailed("LossScaler extends torch.amp.GradScaler: write the scaler yourself.")


def scaler_signature() -> Part:
    """The constructor takes GradScaler's keywords, with its defaults."""
    return Part("core.produce:signature", judge_scaler_signature)


def judge_scaler_signature(part: Part, found: dict[str, Any]) -> None:
    """See :func:`scaler_signature` (a signature that cannot be read has no parameters)."""
    params = found.get("params", {})
    for name, default in cases.SCALER_DEFAULTS.items():
        if name not in params:
            raise CheckFailed(f"LossScaler's constructor should take `{name}`, as GradScaler's.")
        param = params[name]
        if not param["has_default"] or param["default"] != default:
            raise CheckFailed(
                f"LossScaler's default {name} should be {default!r}, as GradScaler's; yours is "
                f"{param['repr']}."
            )


def scaler_basics() -> Part:
    """``get_scale()``, ``scale(loss)`` and its gradient for several ``init_scale`` values,
    and a disabled scaler."""
    return Part(
        "week06.produce:scaler_basics",
        judge_scaler_basics,
        inputs={
            "inits": list(cases.SCALE_INITS),
            "disabled_init": cases.DISABLED_INIT,
            "forbid": list(SCALER_FORBID),
        },
    )


def _forbidden_scaler_call(error: dict[str, Any]) -> None:
    if error.get("forbidden"):
        raise CheckFailed(
            f"LossScaler called {error['forbidden']}: the scaler must be your own code."
        )


def judge_scaler_basics(part: Part, found: dict[str, Any]) -> None:
    """See :func:`scaler_basics`."""
    error = found.get("error")

    def raised(stage: str, index: int | None, call: str) -> None:
        if error is not None and error["stage"] == stage and error["index"] == index:
            _forbidden_scaler_call(error)
            raise CheckFailed(f"{call} raised {error_text(error)}")

    for index, init in enumerate(part.inputs["inits"]):
        built = f"LossScaler(init_scale={init:g})"
        raised("construct", index, built)
        raised("get_scale", index, f"{built}.get_scale()")
        raised("get_scale_float", index, f"float({built}.get_scale())")
        seen = found["inits"][index]
        if seen["get_scale"] != init:
            raise CheckFailed(
                f"{built}.get_scale() should be {init:g}, got {seen['get_scale_repr']}."
            )
        raised("scale", index, f"with init_scale={init:g}, scale(loss)")
        if not seen["scaled_is_tensor"] or seen["scaled"] != 0.75 * init:
            raise CheckFailed(
                f"with init_scale={init:g}, scale(loss) should return loss * {init:g}."
            )
        raised("backward", index, f"with init_scale={init:g}, scale(loss).backward()")
        if seen["grad"] is None or seen["grad"] != init:
            raise CheckFailed("scale(loss) must keep the loss in the autograd graph.")
    disabled = f"LossScaler(init_scale={part.inputs['disabled_init']:g}, enabled=False)"
    raised("disabled_construct", None, disabled)
    raised("disabled_scale", None, f"{disabled}.scale(loss)")
    raised("disabled_get_scale", None, f"float({disabled}.get_scale())")
    off = found["disabled"]
    if not off["same_loss"] or off["get_scale"] != 1.0:
        raise CheckFailed(
            "with enabled=False, scale(loss) should return the loss itself and get_scale() "
            "1.0, as GradScaler does."
        )


def scaler_runs(kind: str) -> Part:
    """The student's scaler makes GradScaler's decisions on every case of ``kind``."""
    scaler_cases = cases.SCALER_CASES[kind]
    return Part(
        "week06.produce:scaler_runs",
        judge_scaler_runs,
        inputs={"cases": [c.to_request() for c in scaler_cases], "forbid": list(SCALER_FORBID)},
        reference=lambda: cases.scaler_references(scaler_cases),
        context={"cases": scaler_cases, "answer": "LossScaler", "mistakes": LOSS_SCALER_MISTAKES},
    )


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


def judge_scaler_runs(part: Part, found: dict[str, Any]) -> None:
    """See :func:`scaler_runs`."""
    _judge_class_runs(part, found, run_scaler, _scaler_difference, forbidden=_forbidden_scaler_call)


def _judge_class_runs(
    part: Part,
    found: dict[str, Any],
    rerun: Callable[[Any, Any], Any],
    difference: Callable[[Any, Any, Any], str | None],
    same: Callable[[Any, Any], bool] | None = None,
    forbidden: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """The student's class (``part.context["answer"]``) ran every case like the reference.

    ``difference(student, reference, case)`` says how two runs part, or None. A failing case
    is run again (``rerun(factory, case)``) with each typical wrong class of
    ``part.context["mistakes"]``, and the first whose run is the ``same(student, wrong)`` as
    the student's (by default: no difference) is named. ``forbidden(error)`` may fail first
    on a forbidden call.
    """
    answer = part.context["answer"]
    error = found.get("error")
    for index, (case, ref) in enumerate(zip(part.context["cases"], part.expected, strict=True)):
        if error is not None and error["case"] == index:
            if forbidden is not None:
                forbidden(error)
            raise CheckFailed(
                f"[{case.name}] your {answer} raised {error['type']}: {error['message']}"
            )
        student = type(ref)(**found["runs"][index])  # a ScalerRun, a MasterRun
        problem = difference(student, ref, case)
        if problem is None:
            continue
        message = f"[{case.name}] {problem}"
        with cases.quiet(), one_thread():
            for mistake in part.context["mistakes"]:
                wrong = rerun(mistake.factory, case)
                alike = same(student, wrong) if same else difference(student, wrong, case) is None
                if alike:
                    message += f" This looks like a typical mistake: {mistake.sentence}"
                    break
        raise CheckFailed(message)


# --- master_weights ----------------------------------------------------------------------------


def master_class() -> Part:
    """``MasterWeightOptimizer`` is a class."""
    return Part("core.produce:lineage", judge_master_class)


def judge_master_class(part: Part, found: dict[str, Any]) -> None:
    """See :func:`master_class`."""
    if not found["is_class"]:
        raise CheckFailed("MasterWeightOptimizer must be a class.")


def master_structure() -> Part:
    """fp32 master copies, the inner optimizer, the model's own bf16 parameters, zero_grad."""
    return Part("week06.produce:master_structure", judge_master_structure)


def judge_master_structure(part: Part, found: dict[str, Any]) -> None:
    """See :func:`master_structure`."""
    if "construct_error" in found:
        raise CheckFailed(
            "MasterWeightOptimizer(model.parameters(), torch.optim.SGD, lr=0.1) raised "
            f"{error_text(found['construct_error'])}"
        )
    error = found.get("error")
    if error is not None and error["stage"] == "master_params":
        raise CheckFailed(f"reading MasterWeightOptimizer.master_params raised {error_text(error)}")
    if found["n_masters"] != found["n_params"]:
        raise CheckFailed(
            "MasterWeightOptimizer.master_params should be a list with one fp32 copy per "
            "parameter (given a generator, as model.parameters() is, too)."
        )
    for seen in found["masters"]:
        if not seen["fp32_new"]:
            raise CheckFailed("each master copy should be a new fp32 tensor, not the parameter.")
        if not seen["equal"]:
            raise CheckFailed("each master copy should start equal to its parameter.")
    if not found["inner_is_sgd"]:
        raise CheckFailed(
            "MasterWeightOptimizer.optimizer should be the inner optimizer, built as "
            "optimizer_cls(master_params, **optimizer_kwargs)."
        )
    if error is not None and error["stage"] == "backward":
        raise CheckFailed(f"the backward pass of the wrapped bf16 model raised {error_text(error)}")
    if error is not None:
        raise CheckFailed(
            f"MasterWeightOptimizer's step() or zero_grad() raised {error_text(error)}"
        )
    if not found["kept"]:
        raise CheckFailed(
            "the model must keep its own bf16 parameters (the same tensors, updated in place)."
        )
    if not found["grads_cleared"]:
        raise CheckFailed("zero_grad() should clear the model's gradients (set them to None).")


def master_runs(kind: str) -> Part:
    """The student's wrapper trains like fp32 master weights on every case of ``kind``."""
    master_cases = cases.MASTER_CASES[kind]
    return Part(
        "week06.produce:master_runs",
        judge_master_runs,
        inputs={"cases": [c.to_request() for c in master_cases]},
        reference=lambda: cases.master_references(master_cases),
        context={
            "cases": master_cases,
            "answer": "MasterWeightOptimizer",
            "mistakes": MASTER_WEIGHTS_MISTAKES,
        },
    )


def _master_difference(student: MasterRun, ref: MasterRun, case: MasterCase) -> str | None:
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
        low = getattr(torch, case.dtype)
        for name, p in params.items():
            if not torch.equal(p, masters[name].to(low).float()):
                return (
                    f"after step {t + 1}, the model's parameter '{name}' is not its master copy "
                    f"rounded to {DTYPE_NAMES[low]}."
                )
    return None


def _same_master_run(a: MasterRun, b: MasterRun) -> bool:
    for pa, pb, ma, mb in zip(a.params, b.params, a.masters, b.masters, strict=True):
        if set(ma) != set(mb):
            return False
        if _params_close(pa, pb) is not None or _params_close(ma, mb) is not None:
            return False
    return True


def judge_master_runs(part: Part, found: dict[str, Any]) -> None:
    """See :func:`master_runs`."""
    _judge_class_runs(part, found, run_master, _master_difference, same=_same_master_run)


# --- adamw_traffic -----------------------------------------------------------------------------


def adamw_traffic() -> Part:
    """Bytes moved per AdamW step for several sizes and precisions."""
    return Part(
        "core.produce:calls",
        judge_adamw_traffic,
        inputs={
            "calls": [
                {"args": [n], "kwargs": {"param_bytes": pb, "grad_bytes": gb, "state_bytes": sb}}
                for n, pb, gb, sb in cases.TRAFFIC_CALLS
            ]
        },
        reference=lambda: [cases.step_bytes(*call) for call in cases.TRAFFIC_CALLS],
    )


def judge_adamw_traffic(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`adamw_traffic`."""

    def wrong(call: tuple[int, int, int, int], got: Any, expected: int) -> str:
        n, pb, gb, sb = call
        args = f"adamw_step_bytes({n}, param_bytes={pb}, grad_bytes={gb}, state_bytes={sb})"
        return f"{args} returned {got!r}; expected {expected}."

    _judge_exact_values(
        cases.TRAFFIC_CALLS,
        part.expected,
        outcomes,
        call=lambda _: "adamw_step_bytes",
        wrong=wrong,
        mistakes=lambda call, _: traffic_mistakes(*call).items(),
    )


# --- flat_adamw --------------------------------------------------------------------------------


@functools.cache
def optim_forbid() -> tuple[str, ...]:
    """What a FlatAdamW must not call while it runs: every torch.optim optimizer's step
    (subclasses before the classes they extend), every update function in torch.optim's
    modules, and the fused optimizer kernels."""
    classes = [
        (name, obj)
        for name, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    ]
    classes.sort(key=lambda item: -len(item[1].__mro__))
    found = [f"torch.optim.{name}.step" for name, _ in classes]
    for info in pkgutil.iter_modules(torch.optim.__path__):
        if info.name.startswith("lr_scheduler") or info.name in {"optimizer", "swa_utils"}:
            continue
        module = importlib.import_module(f"torch.optim.{info.name}")
        for name, obj in vars(module).items():
            if (
                callable(obj)
                and not isinstance(obj, type)
                and getattr(obj, "__module__", "") == module.__name__
            ):
                found.append(f"{module.__name__}.{name}")
    found += [f"torch.{op}" for op in OPTIMIZER_OPS if hasattr(torch, op)]
    return tuple(found)


def _flat_raised(case: Case, error: dict[str, Any]) -> str:
    if error.get("forbidden"):
        return (
            f"`FlatAdamW` called {error['forbidden']}: the update must be your own "
            "code, not torch.optim's."
        )
    hint = ""
    if case.frozen and any(base in _FROZEN_ERRORS for base in error.get("bases", ())):
        hint = " Leave parameters that do not require a gradient out of the flat buffers."
    return f"[{case.name}] your FlatAdamW raised {error['type']}: {error['message']}.{hint}"


FLAT_ADAMW = OptimizerSpec(
    "FlatAdamW",
    "torch.optim.AdamW",
    FLAT_ADAMW_MISTAKES,
    defaults=ADAMW_DEFAULTS,
    never_changed=(
        " Your FlatAdamW never changed the model's parameters: point each p.data at "
        "its slice of the flat buffer, and update that buffer in place."
    ),
    raised=_flat_raised,
)


def flat_runs(kind: str) -> Part:
    """FlatAdamW matches torch.optim.AdamW after every step of every case of ``kind``, with
    torch.optim's update code blocked (judged as every week's optimizer runs are)."""
    return against_torch(
        FLAT_ADAMW,
        cases.FLAT_CASES[kind],
        "week06.produce:optimizer_runs",
        forbid=list(optim_forbid()),
    )


def flat_value_errors() -> Part:
    """Invalid lr, eps, betas and weight_decay raise ValueError naming the parameter."""
    return Part(
        "core.produce:constructor_outcomes",
        judge_flat_value_errors,
        inputs={"calls": [kwargs for kwargs, _ in cases.FLAT_INVALID], "shape": (3,)},
    )


def judge_flat_value_errors(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`flat_value_errors`."""
    for (kwargs, names), outcome in zip(cases.FLAT_INVALID, outcomes, strict=True):
        judge_value_error(f"FlatAdamW(params, {kwargs})", outcome["error"], names)


def flat_layout() -> Part:
    """Parameters and gradients are views of one flat buffer; step() costs the same number
    of tensor operations whatever the number of parameter tensors."""
    return Part("week06.produce:flat_layout", judge_flat_layout)


def judge_flat_layout(part: Part, found: dict[str, Any]) -> None:
    """See :func:`flat_layout`."""
    if "train_error" in found:
        raise CheckFailed(f"FlatAdamW raised {error_text(found['train_error'])}")
    if "look_error" in found:
        raise CheckFailed(
            "reading the model's parameters and gradients after two steps raised "
            f"{error_text(found['look_error'])}"
        )
    if found["param_storages"] != 1:
        raise CheckFailed(
            "the model's parameters should be views of one flat buffer (they live in "
            f"{found['param_storages']} separate storages): "
            "copy them into a flat tensor and point each p.data at its slice."
        )
    if found["unchanged"]:
        raise CheckFailed(
            "a parameter did not change after two steps: the model's parameters must be the "
            "views your step updates."
        )
    if found["grads_missing"] or found["grad_storages"] != 1:
        raise CheckFailed(
            "after zero_grad() and backward(), every p.grad should be a view into one flat "
            "gradient buffer: point each p.grad at its slice once, and make zero_grad() zero "
            "the buffer in place instead of setting the gradients to None."
        )
    if "ops_error" in found:
        raise CheckFailed(f"FlatAdamW raised {error_text(found['ops_error'])}")
    few, many = found["ops"]
    if many > few + cases.FLAT_OPS_SLACK:
        raise CheckFailed(
            f"step() ran {few} tensor operations for a model with 4 parameter tensors but "
            f"{many} for one with 40: work on the flat buffers with one set of operations per "
            "param group, not one per parameter."
        )
