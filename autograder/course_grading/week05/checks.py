"""Trusted side: Week 5's hidden checks, by test cell.

Exercise ids (grade ids in the notebook start with them): ``warmup_cosine_lr``, ``step_lr``,
``lambda_schedule``, ``clip_grad_norm``, ``init_std``, ``early_stopping``.

Week 5 switches off ``torch.nn.utils.clip_grad`` in the sandbox (the clipping must be the
student's own). ``torch.optim.lr_scheduler`` and ``torch.nn.init`` stay on (the notebook and
torch itself need them); while a producer runs the student's schedule, a scheduler's
constructor is blocked, and while it runs the initialization stds, torch.nn.init's fan
computation is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_grading.core.checks import CheckFailed, Checks, Part
from course_grading.core.interface import judge_value_error
from course_grading.core.mistakes import Mistake
from course_grading.week05 import cases as C  # noqa: N812 (the week's cases and references)
from course_grading.week05.mistakes import (
    CLIP_GRAD_NORM_MISTAKES,
    EARLY_STOPPING_MISTAKES,
    INIT_STD_MISTAKES,
    LAMBDA_SCHEDULE_MISTAKES,
    RESTORES_LAST,
    STEP_LR_MISTAKES,
    WARMUP_COSINE_LR_MISTAKES,
    WARMUP_COSINE_NO_HOLD,
    Stopper,
)
from course_grading.week05.produce import factor

CLIP_ADVICE = "compute the norm and scale the gradients yourself."
HIDDEN_TORCH = {"torch.nn.utils.clip_grad": CLIP_ADVICE}
DEMONSTRATIONS = {
    "w05-schedules-run": "four schedules training the same network (about 1 s)",
    "w05-clip-demo": "a corrupted batch with and without clipping (about 0.5 s)",
}

# Blocked while the student's code runs: (dotted names, how the message names them, advice).
NO_SCHEDULERS = (
    ("torch.optim.lr_scheduler.LRScheduler.__init__",),
    "a torch.optim.lr_scheduler class",
    "write the schedule yourself; the check compares it with torch's schedulers.",
)
NO_FANS = (
    ("torch.nn.init._calculate_fan_in_and_fan_out", "torch.nn.init._calculate_correct_fan"),
    "torch.nn.init's fan computation",
    "compute fan_in and fan_out from weight.shape yourself (calculate_gain is fine).",
)
LR_SCHEDULER = "torch.optim.lr_scheduler.LRScheduler"
SWITCHED_OFF = " is switched off while the course grades your notebook: "

# Schedules repeat the same float arithmetic up to reordering; every mistake is far outside.
LR_RTOL = 1e-9
# Clipping and init run in float64: honest answers agree to ~1e-15.
RTOL = 1e-12


def checks() -> Checks:
    """Every test cell's hidden check."""
    return {
        "warmup_cosine_lr_test_warmup": [warmup_cosine(C.WARMUP_CASES, warmup_only=True)],
        "warmup_cosine_lr_test_full": [warmup_cosine(C.DECAY_CASES, warmup_only=False)],
        "step_lr_test": [defaults("step_lr", {"gamma": 0.1}), step_lr()],
        "lambda_schedule_test_basic": [lambda_class(), lambda_schedule(C.LAMBDA_BASIC_CASES)],
        "lambda_schedule_test_groups": [lambda_class(), lambda_schedule(C.LAMBDA_GROUP_CASES)],
        "clip_grad_norm_test_basic": [
            defaults("clip_grad_norm", {"norm_type": 2.0, "error_if_nonfinite": False}),
            clip_grad_norm("basic"),
        ],
        "clip_grad_norm_test_options": [clip_grad_norm("options")],
        "clip_grad_norm_test_nonfinite": [clip_grad_norm("nonfinite")],
        "init_std_test_xavier": [
            defaults("xavier_std", {"gain": 1.0}),
            init_std("xavier_std", C.XAVIER_CASES),
        ],
        "init_std_test_kaiming": [
            defaults("kaiming_std", {"a": 0, "mode": "fan_in", "nonlinearity": "leaky_relu"}),
            init_std("kaiming_std", C.KAIMING_CASES),
        ],
        "early_stopping_test_patience": [early_stopping_patience(), early_stopping_validation()],
        "early_stopping_test_restore": [early_stopping_restore()],
        "early_stopping_test_run": [early_stopping_run()],
    }


# --- shared judges ---------------------------------------------------------------------------


def defaults(answer: str, names: dict[str, Any]) -> Part:
    """The function takes each of ``names`` with torch's default (skipped if unreadable)."""
    return Part(
        "core.produce:signature", judge_defaults, context={"answer": answer, "defaults": names}
    )


def judge_defaults(part: Part, found: dict[str, Any]) -> None:
    """See :func:`defaults`."""
    if "unreadable" in found:
        return
    answer, params = part.context["answer"], found["params"]
    for name, value in part.context["defaults"].items():
        if name not in params:
            raise CheckFailed(f"{answer} should take `{name}`.")
        param = params[name]
        if not param["has_default"] or _differs(param["default"], value):
            raise CheckFailed(
                f"{answer}'s default {name} should be {value!r}, as in torch; yours is "
                f"{param['repr']}."
            )


def _differs(got: Any, want: Any) -> bool:
    try:
        return bool(got != want)
    except Exception:  # e.g. a tensor of several values
        return True


def raised(
    answer: str, call: str, error: dict[str, Any], blocked: tuple | None = None
) -> CheckFailed:
    """The failure for ``call`` (of the answer ``answer``) having raised ``error``.

    A call that ``blocked`` forbids, or a switched-off torch function, is named as such.
    """
    if blocked is not None and error.get("forbidden") in blocked[0]:
        return CheckFailed(f"`{answer}` called {blocked[1]}: {blocked[2]}")
    switched_off = switched_off_text(answer, error)
    if switched_off is not None:
        return CheckFailed(switched_off)
    return CheckFailed(f"{call} raised {error['type']}: {error['message']}")


def switched_off_text(answer: str, error: dict[str, Any] | None) -> str | None:
    """The old guards' words for a switched-off torch function's refusal, else ``None``.

    A :class:`~course_grading.core.torch_stubs.SwitchedOff` error reads "torch.X is switched
    off while the course grades your notebook: why"; the student reads "`answer` called
    torch.X: why", as before the sandbox. (Nothing here is Week 5's own: it could move to core.)
    """
    if not error or error.get("type") != "SwitchedOff":
        return None
    label, found, reason = str(error.get("message", "")).partition(SWITCHED_OFF)
    if not found:
        return None
    return f"`{answer}` called {label}: {reason}"


def _close(a: float, b: float, rtol: float, atol: float = 0.0) -> bool:
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        raise TypeError("not a number")  # malformed outputs fail the check
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def _name(mistakes: Sequence[Mistake], matches: Callable[..., bool], *context: Any) -> str:
    """The sentence of the first mistake for which ``matches(mistake, *context)`` holds."""
    for mistake in mistakes:
        try:
            if matches(mistake, *context):
                return f" This looks like a typical mistake: {mistake.sentence}"
        except Exception:  # a variant that cannot run this case cannot be the explanation
            continue
    return ""


def _must_be_function(found: dict[str, Any], answer: str) -> None:
    if found["callable"] is not True:
        raise CheckFailed(f"{answer} must be a function.")


def _values_of(
    outcome: dict[str, Any], answer: str, call: Callable[[int], str], steps: int
) -> list[float]:
    """The run's values, or the failure for the call that raised or returned no number."""
    if "error" in outcome:
        raise raised(answer, call(outcome["step"]), outcome["error"], NO_SCHEDULERS)
    if "not_number" in outcome:
        raise CheckFailed(f"{answer} should return a number, but returned {outcome['not_number']}.")
    values = outcome["values"]
    if len(values) != steps or not all(isinstance(v, float) for v in values):
        raise CheckFailed(f"{answer}: the check did not run to the end.")
    return values


# --- warmup_cosine_lr ------------------------------------------------------------------------


def _describe_schedule(c: dict[str, Any]) -> str:
    return (
        f"peak_lr={c['peak_lr']:g}, final_lr={c['final_lr']:g}, warmup_steps={c['warmup_steps']}, "
        f"total_steps={c['total_steps']}"
    )


def _schedule_steps(case: dict[str, Any], warmup_only: bool) -> int:
    w, t = case["warmup_steps"], case["total_steps"]
    return w + 1 if warmup_only else t + 1 + max(3, t // 10)


def warmup_cosine(cases: Sequence[dict[str, Any]], warmup_only: bool) -> Part:
    """The schedule against SequentialLR(LinearLR, CosineAnnealingLR), step by step.

    ``warmup_only``: steps 0 to warmup_steps; otherwise the whole schedule and a tail after
    total_steps, where the lr must stay at final_lr.
    """
    runs = [{"kwargs": dict(c), "steps": _schedule_steps(c, warmup_only)} for c in cases]
    return Part(
        "week05.produce:schedule_values",
        judge_warmup_cosine,
        inputs={"runs": runs, "forbid": NO_SCHEDULERS[0]},
        reference=lambda: [C.warmup_cosine(c) for c in cases],
        context={
            "cases": list(cases),
            "warmup_only": warmup_only,
            "mistakes": WARMUP_COSINE_LR_MISTAKES,
        },
    )


def judge_warmup_cosine(part: Part, found: dict[str, Any]) -> None:
    """See :func:`warmup_cosine`."""
    _must_be_function(found, "warmup_cosine_lr")
    warmup_only = part.context["warmup_only"]
    for index, (case, reference) in enumerate(
        zip(part.context["cases"], part.expected, strict=True)
    ):
        w, t = case["warmup_steps"], case["total_steps"]
        n = _schedule_steps(case, warmup_only)
        expected = list(reference[:n]) + [case["final_lr"]] * (n - len(reference))
        if index >= len(found["runs"]):
            raise CheckFailed("warmup_cosine_lr: the check did not run to the end.")
        got = _values_of(
            found["runs"][index],
            "warmup_cosine_lr",
            lambda s, case=case: f"warmup_cosine_lr({s}, {_describe_schedule(case)})",
            n,
        )
        atol = 1e-12 * max(case["peak_lr"], case["final_lr"])
        bad = [s for s in range(n) if not _close(got[s], expected[s], LR_RTOL, atol)]
        if not bad:
            continue
        s = bad[0]
        if s > t:
            source = "the schedule's definition"
            hint = f" This looks like a typical mistake: {WARMUP_COSINE_NO_HOLD}"
        else:
            source = (
                "torch's SequentialLR(LinearLR, CosineAnnealingLR)"
                if w
                else "torch's CosineAnnealingLR"
            )
            args = (case["peak_lr"], case["final_lr"], w, t)
            hint = _name(part.context["mistakes"], _matches_schedule, args, got[: min(n, t)], atol)
        raise CheckFailed(
            f"[{_describe_schedule(case)}] at step {s} your warmup_cosine_lr gives "
            f"{got[s]:.10g}, but {source} gives {expected[s]:.10g}.{hint}"
        )


def _matches_schedule(m: Mistake, args: tuple, got: list[float], atol: float) -> bool:
    return all(_close(m.rule(k, *args), value, LR_RTOL, atol) for k, value in enumerate(got))


# --- step_lr ---------------------------------------------------------------------------------


def step_lr() -> Part:
    """The step schedule against torch.optim.lr_scheduler.StepLR."""
    runs = [
        {"kwargs": {k: c[k] for k in ("lr", "step_size", "gamma")}, "steps": c["n_steps"]}
        for c in C.STEP_LR_CASES
    ]
    return Part(
        "week05.produce:schedule_values",
        judge_step_lr,
        inputs={"runs": runs, "forbid": NO_SCHEDULERS[0]},
        reference=lambda: [C.step_lr(c) for c in C.STEP_LR_CASES],
        context={"mistakes": STEP_LR_MISTAKES},
    )


def judge_step_lr(part: Part, found: dict[str, Any]) -> None:
    """See :func:`step_lr`."""
    _must_be_function(found, "step_lr")
    for index, (case, expected) in enumerate(zip(C.STEP_LR_CASES, part.expected, strict=True)):
        lr, size, gamma = case["lr"], case["step_size"], case["gamma"]
        where = f"lr={lr:g}, step_size={size}, gamma={gamma:g}"
        if index >= len(found["runs"]):
            raise CheckFailed("step_lr: the check did not run to the end.")
        got = _values_of(found["runs"][index], "step_lr", lambda _s: "step_lr", case["n_steps"])
        bad = [
            s
            for s, (a, b) in enumerate(zip(got, expected, strict=True))
            if not _close(a, b, LR_RTOL)
        ]
        if bad:
            s = bad[0]
            hint = _name(part.context["mistakes"], _matches_schedule, (lr, size, gamma), got, 0.0)
            raise CheckFailed(
                f"[{where}] at step {s} your step_lr gives {got[s]:.10g}, but torch's StepLR "
                f"gives {expected[s]:.10g}.{hint}"
            )


# --- lambda_schedule -------------------------------------------------------------------------


def lambda_class() -> Part:
    """LambdaSchedule is a class, and not one of torch's schedulers."""
    return Part("core.produce:lineage", judge_lambda_class)


def judge_lambda_class(part: Part, found: dict[str, Any]) -> None:
    """See :func:`lambda_class`."""
    if found["is_class"] is not True:
        raise CheckFailed("LambdaSchedule must be a class.")
    if LR_SCHEDULER in found["mro"]:
        raise CheckFailed(
            "LambdaSchedule extends a torch.optim.lr_scheduler class: write it yourself."
        )


def lambda_schedule(cases: Sequence[dict[str, Any]]) -> Part:
    """The groups' lrs step by step against torch.optim.lr_scheduler.LambdaLR; get_last_lr()."""
    return Part(
        "week05.produce:lambda_runs",
        judge_lambda_schedule,
        inputs={"cases": [dict(c) for c in cases], "forbid": NO_SCHEDULERS[0]},
        reference=lambda: [C.lambda_lr(c) for c in cases],
        context={"cases": list(cases), "mistakes": LAMBDA_SCHEDULE_MISTAKES},
    )


_LAMBDA_CALLS = {
    "construct": "LambdaSchedule(optimizer, lr_lambda)",
    "step": "LambdaSchedule.step()",
    "get_last_lr": "LambdaSchedule.get_last_lr()",
    "optimizer": "optimizer.step() after LambdaSchedule",
    "read": "reading the param groups' lr after LambdaSchedule",
}


def judge_lambda_schedule(part: Part, runs: list[dict[str, Any]]) -> None:
    """See :func:`lambda_schedule`."""
    for index, (case, expected) in enumerate(
        zip(part.context["cases"], part.expected, strict=True)
    ):
        if index >= len(runs):
            raise CheckFailed("LambdaSchedule: the check did not run to the end.")
        run = runs[index]
        if "error" in run:
            raise raised("LambdaSchedule", _LAMBDA_CALLS[run["call"]], run["error"], NO_SCHEDULERS)
        fn = factor(case["factor"], case["args"])
        where = f"{case['factor']}, param groups with lr {case['group_lrs']}"
        got = run["lrs"]
        if len(got) != len(expected):
            raise CheckFailed("LambdaSchedule: the check did not run to the end.")
        for s, (mine, ref) in enumerate(zip(got, expected, strict=True)):
            if len(mine) != len(ref):
                raise CheckFailed("LambdaSchedule: the check did not run to the end.")
            bad = [
                i
                for i, (a, b) in enumerate(zip(mine, ref, strict=True))
                if not _close(a, b, LR_RTOL)
            ]
            if not bad:
                continue
            i = bad[0]
            hint = _name(part.context["mistakes"], _matches_lambda, case, fn, got)
            raise CheckFailed(
                f"[{where}] before step {s}, param group {i} has lr {mine[i]:.10g} with your "
                f"LambdaSchedule but {ref[i]:.10g} with torch's LambdaLR.{hint}"
            )
        if "last_unreadable" in run:
            raise CheckFailed("get_last_lr() should return a list with one lr per group.")
        last, current = run["last"], run["current"]
        if not _same_lrs([last], [current]):
            raise CheckFailed(
                f"[{where}] get_last_lr() returned {last}, but the groups' lrs are {current}."
            )


def _matches_lambda(m: Mistake, case: dict, fn: Callable[[int], float], got: list) -> bool:
    return _same_lrs(m.rule(case["group_lrs"], fn, case["n_steps"]), got)


def _same_lrs(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(_close(p, q, LR_RTOL) for p, q in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


# --- clip_grad_norm --------------------------------------------------------------------------


def clip_grad_norm(group: str) -> Part:
    """The group's clipping cases against torch.nn.utils.clip_grad_norm_."""
    cases = C.clip_cases()[group]
    return Part(
        "week05.produce:clip_runs",
        judge_clip_grad_norm,
        inputs={"cases": cases},
        reference=lambda: [C.clip(c) for c in cases],
        context={"cases": cases, "mistakes": CLIP_GRAD_NORM_MISTAKES},
    )


def judge_clip_grad_norm(part: Part, found: dict[str, Any]) -> None:
    """See :func:`clip_grad_norm`."""
    _must_be_function(found, "clip_grad_norm")
    cases = part.context["cases"]
    if len(found["cases"]) != len(cases):
        raise CheckFailed("clip_grad_norm: the check did not run to the end.")
    for case, want, got in zip(cases, part.expected, found["cases"], strict=True):
        for key in ("error", "exception"):
            switched_off = switched_off_text("clip_grad_norm", got[key])
            if switched_off is not None:
                raise CheckFailed(switched_off)
        if got["error"] is None and got["exception"] is None and got["not_number"] is not None:
            raise CheckFailed(
                f"clip_grad_norm should return a number, but returned {got['not_number']}."
            )
        where = f"[{case['name']}; max_norm={case['max_norm']}]"
        problem = _clip_problem(got, want)
        if problem is None:
            if got["same_objects"] is not True:
                raise CheckFailed(
                    f"{where} the values are right, but the gradients are new tensors: scale "
                    "each p.grad in place (p.grad.mul_(coef)), as torch does."
                )
            continue
        hint = _name(part.context["mistakes"], _matches_clip, case, got)
        raise CheckFailed(f"{where} {problem}{hint}")


def _clip_problem(got: dict[str, Any], want: dict[str, Any]) -> str | None:
    if got["exception"] is not None:
        exc = got["exception"]
        return f"clip_grad_norm raised {exc['type']}: {exc['message']}."
    if want["error"] is not None and got["error"] is None:
        return (
            "the total norm is not finite and error_if_nonfinite=True, so clip_grad_norm "
            "should raise RuntimeError (before touching the gradients)."
        )
    if want["error"] is None and got["error"] is not None:
        return f"clip_grad_norm raised RuntimeError: {got['error']['message']}."
    if want["error"] is None and not _close(got["total"], want["total"], RTOL):
        return (
            f"clip_grad_norm returned {got['total']:.12g}, but torch.nn.utils.clip_grad_norm_ "
            f"returns the total norm {want['total']:.12g}."
        )
    diff = _first_grad_difference(got["grads"], want["grads"])
    if diff is None:
        return None
    i, j, a, b = diff
    if j < 0:
        return (
            f"parameter {i}'s .grad changed shape or presence: leave a None gradient None and "
            "scale the others in place."
        )
    when = "after the error" if want["error"] is not None else "after clipping"
    return (
        f"{when}, element {j} of parameter {i}'s gradient is {a:.12g} with yours but {b:.12g} "
        "with torch.nn.utils.clip_grad_norm_."
    )


def _first_grad_difference(got: list, want: list) -> tuple[int, int, float, float] | None:
    if len(got) != len(want):
        return 0, -1, math.nan, math.nan
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a is None or b is None:
            if a is not b:
                return i, -1, math.nan, math.nan
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return i, -1, math.nan, math.nan
        scale = float(b[torch.isfinite(b)].abs().max()) if torch.isfinite(b).any() else 1.0
        ok = torch.isclose(a, b, rtol=RTOL, atol=1e-15 * scale, equal_nan=True)
        if not bool(ok.all()):
            j = int(torch.nonzero(~ok.flatten())[0])
            return i, j, float(a.flatten()[j]), float(b.flatten()[j])
    return None


def _run_clip(rule: Callable[..., Any], case: dict[str, Any]) -> dict[str, Any]:
    """A catalogued mistake's outcome on ``case``, in the form the producer reports."""
    try:
        return {**C.clip(case, rule), "exception": None}
    except Exception as exc:  # nothing else of the outcome is compared then
        return {"error": None, "exception": {"type": type(exc).__name__, "message": str(exc)}}


def _same_clip(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if (a["error"] is None) != (b["error"] is None) or a["exception"] or b["exception"]:
        return False
    if a["error"] is None and not _close(a["total"], b["total"], RTOL):
        return False
    return _first_grad_difference(a["grads"], b["grads"]) is None


def _matches_clip(m: Mistake, case: dict[str, Any], got: dict[str, Any]) -> bool:
    return _same_clip(_run_clip(m.rule, case), got)


# --- init_std --------------------------------------------------------------------------------


def _init_call(answer: str, case: dict[str, Any]) -> str:
    args = ", ".join(
        [
            f"weight of shape {tuple(case['shape'])}",
            *(f"{k}={v!r}" for k, v in case["kwargs"].items()),
        ]
    )
    return f"{answer}({args})"


def init_std(answer: str, cases: Sequence[dict[str, Any]]) -> Part:
    """The std against the one torch.nn.init's xavier_normal_ / kaiming_normal_ draw with."""
    return Part(
        "week05.produce:init_stds",
        judge_init_std,
        inputs={
            "cases": [{"shape": c["shape"], "kwargs": dict(c["kwargs"])} for c in cases],
            "forbid": NO_FANS[0],
        },
        reference=lambda: [C.init_std(c) for c in cases],
        context={"answer": answer, "cases": list(cases), "mistakes": INIT_STD_MISTAKES},
    )


def judge_init_std(part: Part, found: dict[str, Any]) -> None:
    """See :func:`init_std`."""
    answer = part.context["answer"]
    _must_be_function(found, answer)
    for index, (case, want) in enumerate(zip(part.context["cases"], part.expected, strict=True)):
        if index >= len(found["cases"]):
            raise CheckFailed(f"{answer}: the check did not run to the end.")
        outcome = found["cases"][index]
        call = _init_call(answer, case)
        if outcome.get("error") is not None:
            raise raised(answer, call, outcome["error"], NO_FANS)
        if outcome.get("not_number") is not None:
            raise CheckFailed(
                f"{answer} should return a number, but returned {outcome['not_number']}."
            )
        got = outcome["value"]
        if _close(got, want, RTOL):
            continue
        hint = _name(part.context["mistakes"], _matches_init, case, got)
        name = "xavier_normal_" if case["fn"] == "xavier" else "kaiming_normal_"
        raise CheckFailed(
            f"{call} gave {got:.10g}, but torch.nn.init.{name} draws with std {want:.10g}.{hint}"
        )


def _matches_init(m: Mistake, case: dict[str, Any], got: float) -> bool:
    return _close(m.rule(case["fn"], case["shape"], case["kwargs"]), got, 1e-9)


# --- early_stopping --------------------------------------------------------------------------


def _stopping_inputs(cases: Sequence[tuple]) -> list[dict[str, Any]]:
    return [
        {"patience": patience, "min_delta": min_delta, "losses": list(losses)}
        for _, patience, min_delta, losses in cases
    ]


def _judge_new_stopper(outcome: dict[str, Any], patience: int, min_delta: float) -> None:
    if "not_class" in outcome:
        raise CheckFailed("EarlyStopping must be a class.")
    if "construct_error" in outcome:
        raise raised(
            "EarlyStopping",
            f"EarlyStopping(patience={patience}, min_delta={min_delta})",
            outcome["construct_error"],
        )


def _judge_flags(outcome: dict[str, Any]) -> list[bool]:
    """The stopper's answers, or the failure of the step that raised or answered no bool."""
    if "step_error" in outcome:
        raise raised("EarlyStopping", "EarlyStopping.step(val_loss, model)", outcome["step_error"])
    if "bad_flag" in outcome:
        raise CheckFailed(
            f"EarlyStopping.step() should return True or False, not {outcome['bad_flag']}."
        )
    flags = outcome["flags"]
    if not all(isinstance(f, bool) for f in flags):
        raise CheckFailed("EarlyStopping: the check did not run to the end.")
    return list(flags)


def _stop_story(got: list[bool], want: list[bool]) -> str:
    stop_got = len(got) - 1 if got and got[-1] else None
    stop_want = len(want) - 1 if want and want[-1] else None
    if stop_got is None and len(got) - 1 == stop_want:
        return f"your EarlyStopping did not stop at epoch {stop_want}, where it should."
    if stop_got is None:
        return (
            f"your EarlyStopping never stopped in {len(got)} epochs; it should stop at epoch "
            f"{stop_want}."
        )
    if stop_want is None:
        return f"your EarlyStopping stopped at epoch {stop_got}; it should not stop at all."
    return f"your EarlyStopping stopped at epoch {stop_got}; it should stop at epoch {stop_want}."


def _matches_stopper(
    m: Mistake, patience: int, min_delta: float, losses: Sequence[float], got: list[bool]
) -> bool:
    return C.stopper_flags(m.rule(patience, min_delta), losses) == got


def _reference_stoppers(cases: Sequence[tuple]) -> list[dict[str, Any]]:
    out = []
    for _, patience, min_delta, losses in cases:
        ref = Stopper(patience, min_delta)
        flags = C.stopper_flags(ref, losses)
        out.append({"flags": flags, "best_loss": ref.best_loss, "best_epoch": ref.best_epoch})
    return out


def early_stopping_patience() -> Part:
    """When to stop: patience, min_delta, ties, resets; best_loss and best_epoch."""
    return Part(
        "week05.produce:stopping_runs",
        judge_early_stopping_patience,
        inputs={"cases": _stopping_inputs(C.STOPPING_CASES)},
        reference=lambda: _reference_stoppers(C.STOPPING_CASES),
        context={"mistakes": EARLY_STOPPING_MISTAKES},
    )


def judge_early_stopping_patience(part: Part, found: list[dict[str, Any]]) -> None:
    """See :func:`early_stopping_patience`."""
    for index, ((desc, patience, min_delta, losses), ref) in enumerate(
        zip(C.STOPPING_CASES, part.expected, strict=True)
    ):
        if index >= len(found):
            raise CheckFailed("EarlyStopping: the check did not run to the end.")
        outcome = found[index]
        _judge_new_stopper(outcome, patience, min_delta)
        got, want = _judge_flags(outcome), ref["flags"]
        where = f"[{desc}: patience={patience}, min_delta={min_delta}, losses {losses}]"
        if got != want:
            hint = _name(
                part.context["mistakes"], _matches_stopper, patience, min_delta, losses, got
            )
            raise CheckFailed(f"{where} {_stop_story(got, want)}{hint}")
        for attr in ("best_loss", "best_epoch"):
            value, expected = outcome["best"][attr], ref[attr]
            if value["missing"] is not False:
                raise CheckFailed(f"EarlyStopping has no attribute `{attr}`.")
            number = value["number"]
            if not isinstance(number, float) or not _close(number, float(expected), 1e-12):
                raise CheckFailed(
                    f"{where} when it stopped, {attr} is {value['repr']}; expected {expected!r}."
                )


def early_stopping_validation() -> Part:
    """patience < 1 and min_delta < 0 raise ValueError naming the parameter."""
    invalid = [({"patience": 0}, "patience"), ({"min_delta": -0.1}, "min_delta")]
    return Part(
        "core.produce:calls",
        judge_early_stopping_validation,
        inputs={"calls": [{"kwargs": kwargs} for kwargs, _ in invalid]},
        context={"invalid": invalid},
    )


def judge_early_stopping_validation(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`early_stopping_validation`."""
    invalid = part.context["invalid"]
    if len(outcomes) != len(invalid):
        raise CheckFailed("EarlyStopping: the check did not run to the end.")
    for (kwargs, name), outcome in zip(invalid, outcomes, strict=True):
        call = "EarlyStopping(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
        judge_value_error(call, outcome.get("error"), (name,))


RESTORE_CASES = C.STOPPING_CASES[:3]


def early_stopping_restore() -> Part:
    """restore() brings back the weights and buffers of the best epoch, not the last ones."""
    return Part(
        "week05.produce:restore_runs",
        judge_early_stopping_restore,
        inputs={"cases": _stopping_inputs(RESTORE_CASES)},
        reference=lambda: _reference_stoppers(RESTORE_CASES),
    )


def judge_early_stopping_restore(part: Part, found: list[dict[str, Any]]) -> None:
    """See :func:`early_stopping_restore`."""
    for index, ((desc, patience, min_delta, _), ref) in enumerate(
        zip(RESTORE_CASES, part.expected, strict=True)
    ):
        if index >= len(found):
            raise CheckFailed("EarlyStopping: the check did not run to the end.")
        outcome = found[index]
        _judge_new_stopper(outcome, patience, min_delta)
        last = len(_judge_flags(outcome)) - 1
        best = ref["best_epoch"]
        where = f"[{desc}, patience={patience}]"
        restores = outcome["restores"]
        for again in range(2):
            if again >= len(restores):
                raise CheckFailed("EarlyStopping: the check did not run to the end.")
            seen = restores[again]
            if "error" in seen:
                raise raised("EarlyStopping", "EarlyStopping.restore(model)", seen["error"])
            restored = seen["weight"]
            if not isinstance(restored, float) or restored != best:
                hint = ""
                if restored == last:
                    hint = f" This looks like a typical mistake: {RESTORES_LAST}"
                raise CheckFailed(
                    f"{where} after restore(model) the model holds the weights of epoch "
                    f"{restored:g}; the best epoch was {best}.{hint}"
                )
            if not isinstance(seen["buffer"], float) or seen["buffer"] != best:
                raise CheckFailed(
                    f"{where} restore(model) brought back the weights but not the buffers "
                    "(BatchNorm's running statistics): keep the whole state_dict."
                )


def early_stopping_run() -> Part:
    """A real run that overfits: stop where the reference stops, restore its best weights."""
    settings = [{"patience": p, "min_delta": d} for p, d in C.RUN_SETTINGS]
    return Part(
        "week05.produce:overfitting_runs",
        judge_early_stopping_run,
        inputs={"settings": settings, "max_epochs": C.MAX_EPOCHS},
        reference=lambda: [C.overfitting_reference(p, d, C.MAX_EPOCHS) for p, d in C.RUN_SETTINGS],
        context={"mistakes": EARLY_STOPPING_MISTAKES},
    )


def judge_early_stopping_run(part: Part, found: list[dict[str, Any]]) -> None:
    """See :func:`early_stopping_run`."""
    for index, ((patience, min_delta), ref) in enumerate(
        zip(C.RUN_SETTINGS, part.expected, strict=True)
    ):
        if index >= len(found):
            raise CheckFailed("EarlyStopping: the check did not run to the end.")
        run = found[index]
        _judge_new_stopper(run, patience, min_delta)
        # The old check stepped both stoppers side by side and ended the run where either said
        # stop; the reference's run ends where it stops (``stop``).
        stop = len(ref["flags"]) - 1
        error = run.get("step_error")
        if error is not None and error["epoch"] <= stop:
            raise raised("EarlyStopping", "EarlyStopping.step(val_loss, model)", error)
        flags = run["flags"]
        if not all(isinstance(f, bool) for f in flags):
            raise CheckFailed("EarlyStopping: the check did not run to the end.")
        if True in flags:
            stop = min(stop, flags.index(True))
        got, want = list(flags[: stop + 1]), list(ref["flags"][: stop + 1])
        if len(got) != len(want):
            raise CheckFailed("EarlyStopping: the check did not run to the end.")
        losses = ref["losses"][: len(got)]
        seen = Stopper(patience, min_delta)
        C.stopper_flags(seen, losses)
        where = (
            f"[a small MLP overfitting 100 digits, patience={patience}, min_delta={min_delta}; "
            f"the validation loss is lowest at epoch {seen.best_epoch}]"
        )
        if got != want:
            if not want[-1]:  # the student stopped first: where would the reference stop?
                rest = Stopper(patience, min_delta)
                want = C.stopper_flags(rest, losses + [math.inf] * (patience + 1))
            hint = _name(
                part.context["mistakes"], _matches_stopper, patience, min_delta, losses, got
            )
            raise CheckFailed(f"{where} {_stop_story(got, want)}{hint}")
        if "restore_error" in run:
            raise raised("EarlyStopping", "EarlyStopping.restore(model)", run["restore_error"])
        state, last = run["restored"], run["last"]
        best_state = ref["best_state"]
        if any(not torch.equal(state[k], best_state[k]) for k in best_state):
            is_last = all(torch.equal(state[k], last[k]) for k in last)
            hint = f" This looks like a typical mistake: {RESTORES_LAST}" if is_last else ""
            raise CheckFailed(
                f"{where} after restore(model) the weights are not those of the best epoch.{hint}"
            )
