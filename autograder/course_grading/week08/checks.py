"""Trusted side: Week 8's hidden checks, by test cell.

Exercise ids (grade ids in the notebook start with them): ``newton_schulz``, ``muon``,
``split_params``, ``factored_second_moment``, ``optimizer_state_bytes``.

What is switched off while the student's code runs: ``torch.optim._muon`` and
``torch.optim._adafactor`` (:data:`SWITCHED_OFF`), which hold ``torch.optim.Muon``, its private
Newton–Schulz and ``torch.optim.Adafactor``. The rest of ``torch.optim`` stays on: the notebook
trains with SGD, Adam and AdamW (section 1, the race, the memory printout), and later test cells
use what section 1 built. The producers also block the two modules' functions and the classes'
``__init__`` and ``step`` while the student's code runs (:func:`forbidden`), so that a call
is named in the feedback, and so that running a check in one process (the tests) refuses them
too. The references here (torch's Muon, its Newton–Schulz, its Adafactor) are the real ones.

Muon is compared one step at a time, from the student's own previous parameters, with
torch's step from there, relative to the size of torch's step (see ``cases``): bfloat16
rounding of one step cannot add up, so a Muon written with plain products or in float32
passes, while every typical mistake is at least twice the tolerance away.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_grading.core.checks import CheckFailed, Checks, Part, error_text
from course_grading.core.interface import (
    judge_value_error,
    judge_value_errors,
    own_class,
    signature,
    value_errors,
)
from course_grading.core.mistakes import Mistake
from course_grading.week08.cases import (
    ADAFACTOR_CASES,
    FACTORED_CASES,
    MEMORY_GRID,
    MEMORY_OWN,
    MUON_CASES,
    MUON_DEFAULTS,
    MUON_INVALID,
    MUON_SHAPE_CALLS,
    MUON_STATE_CELLS,
    MUON_VALID,
    NS_POLAR_CASES,
    NS_REFERENCE_CASES,
    NS_SHAPE_CASES,
    RAISES,
    SPLIT_CELLS,
    SPLIT_MODELS,
    TOL_BUFFER,
    TOL_F64,
    TOL_MUON,
    TOL_NS,
    MuonCase,
    NSCase,
    adjusted_lr,
    factored_reference,
    memory_reference,
    names_of,
    ns_reference,
    ns_tolerance,
    rel_err,
    split_reference,
    step_error,
    torch_muon_step,
)
from course_grading.week08.mistakes import (
    FACTORED_MISTAKES,
    MEMORY_MISTAKES,
    MUON_DIRECT,
    MUON_MISTAKES,
    NS_MISTAKES,
    OWN_NS_SENTENCE,
    SPLIT_MISTAKES,
)
from course_grading.week08.produce import (
    DTYPES,
    adafactor_initial,
    adafactor_run,
    build_model,
    dtype_name,
    factored_runs,
)

MUON_REASON = "Muon and its Newton–Schulz must be your own code, not torch.optim's."
ADAFACTOR_REASON = "the factored second moment must be your own code, not torch.optim's."
DEMONSTRATIONS = {"w08-race": "section 5's race of AdamW against Muon + AdamW (about 4 s)"}
SWITCHED_OFF = {"torch.optim._muon": MUON_REASON, "torch.optim._adafactor": ADAFACTOR_REASON}
HIDDEN_TORCH = SWITCHED_OFF
# The classes of SWITCHED_OFF, by the names students know them by.
_SWITCHED_OFF_CLASSES = {"torch.optim._muon": "Muon", "torch.optim._adafactor": "Adafactor"}

LOOKS_LIKE = " It looks like this mistake: "


@functools.cache
def forbidden() -> tuple[str, ...]:
    """What the student's code must not call while a producer runs it: every function of the
    modules in :data:`SWITCHED_OFF`, and their optimizers' ``__init__`` and ``step`` (which
    also stops a class that extends them, or a reference taken earlier)."""
    found = []
    for name, cls in _SWITCHED_OFF_CLASSES.items():
        module = importlib.import_module(name)
        found += [
            f"{name}.{attr}"
            for attr, obj in vars(module).items()
            if inspect.isfunction(obj) and obj.__module__ == name
        ]
        found += [f"torch.optim.{cls}.__init__", f"torch.optim.{cls}.step"]
    return tuple(found)


def _guarded(producer: str, judge: Callable[[Part, Any], None], inputs: dict, **part: Any) -> Part:
    """A part of the producer ``week08.produce:<producer>``, which runs the student's code with
    :func:`forbidden` blocked; ``part``: the part's ``reference`` and ``context``."""
    return Part(
        f"week08.produce:{producer}", judge, {**inputs, "forbid": list(forbidden())}, **part
    )


def _switched_off(error: Any) -> str | None:
    """``"<name>, which is switched off ...: <why>"`` for a call of a forbidden function."""
    name = error.get("forbidden") if isinstance(error, dict) else None
    if not name:
        return None
    reason = next(
        (
            SWITCHED_OFF[module]
            for module, cls in _SWITCHED_OFF_CLASSES.items()
            if name.startswith((f"{module}.", f"torch.optim.{cls}."))
        ),
        MUON_REASON,
    )
    return (
        f"{name}, which is switched off while the course grades your notebook: {reason.rstrip('.')}"
    )


def _raised(error: dict[str, Any] | None) -> str:
    """``raised TypeError: ...``, or which switched-off function the code called, and why."""
    switched_off = _switched_off(error)
    return f"called {switched_off}" if switched_off else f"raised {error_text(error)}"


def checks() -> Checks:
    """Every test cell's hidden check."""
    found: Checks = {
        "newton_schulz_test_reference": [newton_schulz(NS_REFERENCE_CASES, "torch")],
        "newton_schulz_test_polar": [newton_schulz(NS_POLAR_CASES, "polar")],
        "newton_schulz_test_shapes": [newton_schulz(NS_SHAPE_CASES, "torch")],
    }
    for grade_id, cases in MUON_CASES.items():
        # These cells hand in (Muon, newton_schulz): the interface parts look at the first.
        parts = [_of_first(own_class("Muon", extends_optimizer=True))]
        if grade_id == "muon_test_basic":
            parts.append(_of_first(signature("Muon", MUON_DEFAULTS, "torch.optim.Muon")))
        parts += [muon_steps(case, state=grade_id in MUON_STATE_CELLS) for case in cases]
        found[grade_id] = parts
    found["muon_test_validation"] = [
        own_class("Muon", extends_optimizer=True),
        muon_shapes(),
        muon_hyperparameters(),
    ]
    for grade_id, graded in SPLIT_CELLS.items():
        found[grade_id] = [split(graded)]
    found["factored_second_moment_test_basic"] = [factored()]
    found["factored_second_moment_test_adafactor"] = [adafactor()]
    found["optimizer_state_bytes_test_torch"] = [state_bytes()]
    found["optimizer_state_bytes_test_own"] = [state_bytes_own()]
    return found


_FIRST = {
    "core.produce:lineage": "week08.produce:first_lineage",
    "core.produce:signature": "week08.produce:first_signature",
}


def _of_first(part: Part) -> Part:
    """A core interface part, run on the first of the objects a test cell hands in."""
    return dataclasses.replace(part, producer=_FIRST[part.producer])


# --- newton_schulz -----------------------------------------------------------------------------

_AGAINST = {"torch": "torch.optim.Muon's Newton–Schulz", "polar": "the exact U Vᵀ"}


def newton_schulz(cases: Sequence[NSCase], against: str) -> Part:
    """``newton_schulz`` on every case, against torch's function or the exact polar factor."""
    return _guarded(
        "ns_outputs",
        judge_newton_schulz,
        {"cases": [case.request() for case in cases]},
        reference=lambda: [ns_reference(case, against) for case in cases],
        context={"cases": tuple(cases), "against": against, "mistakes": NS_MISTAKES},
    )


def _ns_error(outcome: dict[str, Any], case: NSCase, reference: torch.Tensor) -> float:
    if "value" not in outcome:
        return math.inf
    value = outcome["value"]
    if case.kind == "zero":  # exactly zero, finite, G's shape
        right = (
            isinstance(value, torch.Tensor)
            and tuple(value.shape) == case.shape
            and value.is_floating_point()
            and torch.equal(value.float(), torch.zeros(case.shape))
        )
        return 0.0 if right else math.inf
    return rel_err(value, reference)


def judge_newton_schulz(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`newton_schulz`."""
    cases: tuple[NSCase, ...] = part.context["cases"]
    against = part.context["against"]
    if len(outcomes) != len(cases):
        raise CheckFailed("the newton_schulz check did not run to the end.")
    errors = [_ns_error(o, c, r) for o, c, r in zip(outcomes, cases, part.expected, strict=True)]
    tolerances = [ns_tolerance(case, against) for case in cases]
    failing = [i for i, (e, tol) in enumerate(zip(errors, tolerances, strict=True)) if not e <= tol]
    if not failing:
        return
    i = failing[0]
    case, outcome = cases[i], outcomes[i]
    value = outcome.get("value")
    if "value" not in outcome:
        detail = f"your newton_schulz {_raised(outcome.get('error'))}."
    elif not isinstance(value, torch.Tensor):
        detail = f"your newton_schulz returned {type(value).__name__}, not a tensor."
    elif tuple(value.shape) != case.shape:
        detail = f"your result has shape {tuple(value.shape)}; it must have G's shape {case.shape}."
    elif case.kind == "zero":
        detail = "your result should be all zeros (of G's shape), not nan or other values."
    else:
        detail = (
            f"your result is off by {errors[i]:.3g} relative to {_AGAINST[against]} "
            f"(allowed {tolerances[i]:.3g})."
        )
    mistake = identify_ns(outcomes, cases, failing, part.context["mistakes"])
    hint = f"{LOOKS_LIKE}{mistake.sentence}" if mistake else ""
    raise CheckFailed(f"on {case.label}, {detail}{hint}")


def identify_ns(
    outcomes: Sequence[dict[str, Any]],
    cases: Sequence[NSCase],
    failing: Sequence[int],
    mistakes: Sequence[Mistake] = NS_MISTAKES,
) -> Mistake | None:
    """The mistake whose outputs are closest to the student's on the failing cases, if within
    TOL_NS of them (a rule that raises the same exception type counts as equal)."""
    best, best_err = None, math.inf
    for mistake in mistakes:
        worst = 0.0
        for i in failing:
            case, outcome = cases[i], outcomes[i]
            try:
                wrong = mistake.rule(case.matrix(), case.steps, case.coefficients, case.eps)
            except Exception as exc:
                error = outcome.get("error")
                same = isinstance(error, dict) and error.get("type") == type(exc).__name__
                worst = max(worst, 0.0 if same else math.inf)
                continue
            if "value" not in outcome:
                worst = math.inf
                continue
            worst = max(worst, rel_err(outcome["value"], wrong.float(), floor=1e-30))
        if worst < best_err:
            best, best_err = mistake, worst
    return best if best_err <= TOL_NS else None


# --- Muon: one step at a time --------------------------------------------------------------


def muon_steps(case: MuonCase, state: bool = False) -> Part:
    """The student's Muon on ``case``: each step against torch's from the same parameters;
    with ``state``, also the momentum buffers (their key and values) and frozen matrices."""
    return _guarded(
        "muon_steps",
        judge_muon,
        {"case": case.request()},
        reference=case.gradients,
        context={"case": case, "state": state, "mistakes": MUON_MISTAKES},
    )


@dataclasses.dataclass
class _TorchSteps:
    """torch's step from each of the student's parameters: ``targets[t][i]`` (None for a
    frozen matrix), the sizes of torch's orthogonalized steps, the final momentum buffers."""

    targets: list[list[torch.Tensor | None]]
    sizes: list[list[float]]
    buffers: list[torch.Tensor | None]


# target(t, i, p_prev, grad, hyper): where a step from p_prev should land.
Target = Callable[[int, int, torch.Tensor, torch.Tensor, dict], Any]


def _read_params(found: dict[str, Any], case: MuonCase) -> list[list[torch.Tensor]]:
    params = found["params"]
    for t, row in enumerate(params):
        if len(row) != len(case.shapes):
            raise CheckFailed("the hidden check could not read your Muon's parameters.")
        for p, shape in zip(row, case.shapes, strict=True):
            if not isinstance(p, torch.Tensor) or tuple(p.shape) != shape:
                raise CheckFailed(
                    f"on {case.label}, after step {t} a {shape[0]} x {shape[1]} parameter no "
                    "longer has its shape: update p in place."
                )
    return params


def _torch_steps(
    params: list[list[torch.Tensor]], case: MuonCase, grads: list[list[Any]]
) -> _TorchSteps:
    n = len(case.shapes)
    done = len(params) - 1
    buffers: list[torch.Tensor | None] = [None] * n
    targets: list[list[torch.Tensor | None]] = []
    sizes: list[list[float]] = []
    for t in range(done):
        targets.append([])
        sizes.append([])
        for i in range(n):
            grad, hyper = grads[t][i], case.hyper_of(i)
            if grad is None:
                targets[t].append(None)
                sizes[t].append(0.0)
                continue
            p_prev = params[t][i]
            target, buffers[i] = torch_muon_step(p_prev, buffers[i], grad, hyper)
            decayed = p_prev.float() * (1 - hyper["lr"] * hyper["weight_decay"])
            size = (target - decayed).norm().item()
            targets[t].append(target)
            sizes[t].append(max(size, 1e-5 * p_prev.float().norm().item()))
    return _TorchSteps(targets, sizes, buffers)


@dataclasses.dataclass
class _Errors:
    worst: float  # over every step compared (inf if steps are missing)
    first: tuple[int, int] | None  # the first (step, parameter) beyond the tolerance
    compared_worst: float  # over the steps the student's run has


def _step_errors(
    params: list[list[torch.Tensor]],
    case: MuonCase,
    grads: list[list[Any]],
    torch_steps: _TorchSteps,
    target: Target | None = None,
) -> _Errors:
    """Each of the student's steps against torch's (or ``target``'s) step from the student's
    own previous parameters, relative to the size of torch's step."""
    worst, compared, first = 0.0, 0.0, None
    done = len(params) - 1
    for t in range(case.steps):
        for i in range(len(case.shapes)):
            if t >= done:
                return _Errors(math.inf, first or (t, i), compared)
            grad, p_prev, p_new = grads[t][i], params[t][i], params[t + 1][i]
            if grad is None:
                err = 0.0 if torch.equal(p_prev, p_new) else math.inf
            else:
                if target is None:
                    landing = torch_steps.targets[t][i]
                else:
                    landing = target(t, i, p_prev, grad, case.hyper_of(i))
                if not torch.isfinite(p_prev).all():  # it diverged at a step already compared
                    continue
                if not isinstance(landing, torch.Tensor):
                    err = math.inf
                else:
                    err = step_error(p_new, landing, torch_steps.sizes[t][i])
            if not err <= worst:
                worst = err
            if not err <= compared:
                compared = err
            if not err <= TOL_MUON and first is None:
                first = (t, i)
    return _Errors(worst, first, compared)


def _rule_target(rule: Callable, case: MuonCase) -> Target:
    """A catalogued rule's step from the student's parameters, with the rule's own state."""
    states: list[dict] = [{} for _ in case.shapes]

    def target(t: int, i: int, p_prev: torch.Tensor, grad: torch.Tensor, hyper: dict) -> Any:
        q = p_prev.detach().clone()
        with torch.no_grad():
            rule(q, grad.clone(), states[i], dict(hyper))
        return q

    return target


def _own_ns_target(own: Any) -> Target:
    """torch's step, with the student's newton_schulz of torch's direction in place of torch's."""

    def target(t: int, i: int, p_prev: torch.Tensor, grad: torch.Tensor, hyper: dict) -> Any:
        ortho = own[t][i]
        if not isinstance(ortho, torch.Tensor) or tuple(ortho.shape) != tuple(p_prev.shape):
            return None
        if not ortho.is_floating_point():
            return None
        q = p_prev.detach().clone()
        q.mul_(1 - hyper["lr"] * hyper["weight_decay"])
        q.add_(ortho, alpha=-adjusted_lr(hyper["lr"], hyper["adjust_lr_fn"], q.shape))
        return q

    return target


def judge_muon(part: Part, found: dict[str, Any]) -> None:
    """See :func:`muon_steps`."""
    case: MuonCase = part.context["case"]
    grads = part.expected
    params = _read_params(found, case)
    error = found.get("error")
    if error is not None and len(params) == 1:
        what = "Muon(params, ...)" if error.get("stage") == "construct" else "your Muon"
        raise CheckFailed(f"on {case.label}, {what} {_raised(error)}.")
    torch_steps = _torch_steps(params, case, grads)
    errors = _step_errors(params, case, grads, torch_steps)
    if not errors.worst <= TOL_MUON:
        own = _step_errors(params, case, grads, torch_steps, _own_ns_target(found["own_ns"]))
        if own.worst <= TOL_MUON:
            raise CheckFailed(f"on {case.label}: {OWN_NS_SENTENCE}")
        mistakes = part.context["mistakes"]
        raise CheckFailed(_muon_failure(case, params, grads, torch_steps, errors, error, mistakes))
    if part.context["state"]:
        _judge_muon_state(case, found, torch_steps.buffers)


def _muon_failure(
    case: MuonCase,
    params: list[list[torch.Tensor]],
    grads: list[list[Any]],
    torch_steps: _TorchSteps,
    errors: _Errors,
    error: dict[str, Any] | None,
    mistakes: Sequence[Mistake],
) -> str:
    t, i = errors.first
    rows, cols = case.shapes[i]
    if t >= len(params) - 1:  # the run stopped before this step
        if error is not None and error.get("stage") == "resume":
            return (
                f"on {case.label}, saving state_dict() after {case.resume_at} steps and "
                f"loading it into a new Muon {_raised(error)}."
            )
        if error is not None:
            return f"on {case.label}, at step {t + 1} your Muon {_raised(error)}."
        return f"on {case.label}, your Muon stopped before step {t + 1}."
    if grads[t][i] is None:
        return (
            f"on {case.label}, the {rows} x {cols} matrix without a gradient changed at step "
            f"{t + 1}: {MUON_DIRECT['muon/frozen_moved']}"
        )
    message = (
        f"on {case.label}, your step {t + 1} of the {rows} x {cols} matrix is the first to "
        f"differ from torch's, by up to {errors.compared_worst:.3g} of the step's size "
        f"(allowed {TOL_MUON:.3g})."
    )
    if error is not None:  # it also stopped later
        return f"{message} At step {error.get('step')} your Muon {_raised(error)}."
    mistake = identify_muon(params, case, grads, torch_steps, mistakes)
    if mistake is not None:
        return f"{message}{LOOKS_LIKE}{mistake.sentence}"
    if case.resume_at is not None and t >= case.resume_at:
        return f"{message} {_capital(MUON_DIRECT['muon/buffer_outside_state'])}"
    return message


def _muon_mistake(mistake_id: str) -> str:
    return next(m.sentence for m in MUON_MISTAKES if m.id == mistake_id)


def _capital(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def identify_muon(
    params: list[list[torch.Tensor]],
    case: MuonCase,
    grads: list[list[Any]],
    torch_steps: _TorchSteps,
    mistakes: Sequence[Mistake] = MUON_MISTAKES,
) -> Mistake | None:
    """The catalogued rule whose steps, from the student's own parameters, are closest to the
    student's, if within TOL_MUON."""
    best, best_err = None, math.inf
    for mistake in mistakes:
        try:
            found = _step_errors(
                params, case, grads, torch_steps, _rule_target(mistake.rule, case)
            ).worst
        except Exception:  # a rule that cannot run this case cannot be the explanation
            continue
        if found < best_err:
            best, best_err = mistake, found
    return best if best_err <= TOL_MUON else None


def _judge_muon_state(
    case: MuonCase, found: dict[str, Any], buffers: list[torch.Tensor | None]
) -> None:
    states = found.get("state")
    if not isinstance(states, list) or len(states) != len(case.shapes):
        raise CheckFailed(
            f"on {case.label}, reading your optimizer's state raised "
            f"{error_text(found.get('state_error'))}."
        )
    for i, (state, reference) in enumerate(zip(states, buffers, strict=True)):
        keys = sorted(state)
        if reference is None:  # a frozen matrix
            if state:
                raise CheckFailed(
                    f"on {case.label}: {MUON_DIRECT['muon/frozen_moved']} Its state holds {keys}."
                )
            continue
        if "momentum_buffer" not in state:
            raise CheckFailed(
                f"on {case.label}: {MUON_DIRECT['muon/state_key_name']} Your state holds {keys}."
            )
        buffer = state["momentum_buffer"]
        err = rel_err(buffer, reference)
        if not err <= TOL_BUFFER:
            momentum = case.hyper_of(i)["momentum"]
            sgd_like = (
                isinstance(buffer, torch.Tensor)
                and rel_err(buffer * (1 - momentum), reference) <= TOL_BUFFER
            )
            rows, cols = case.shapes[i]
            hint = f"{LOOKS_LIKE}{_muon_mistake('muon/sgd_momentum_buffer')}" if sgd_like else ""
            raise CheckFailed(
                f"on {case.label}, the momentum buffer of the {rows} x {cols} matrix differs "
                f"from torch's by {err:.3g} (relative).{hint}"
            )


# --- Muon: what the constructor refuses --------------------------------------------------------


def muon_shapes() -> Part:
    """A parameter that is not a matrix, anywhere in the params, raises ValueError."""
    return _guarded(
        "muon_param_outcomes", judge_muon_shapes, {"calls": [call for _, call in MUON_SHAPE_CALLS]}
    )


def judge_muon_shapes(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`muon_shapes`."""
    for (label, _), outcome in zip(MUON_SHAPE_CALLS, outcomes, strict=True):
        try:
            judge_value_error(f"Muon(params) with {label}", outcome["error"])
        except CheckFailed as failure:
            raise CheckFailed(f"{failure} {MUON_DIRECT['muon/accepts_non_2d']}") from None


def muon_hyperparameters() -> Part:
    """Negative lr, momentum or weight_decay and an unknown adjust_lr_fn raise ValueError
    naming the parameter; zeros and both known adjustments are accepted."""
    part = value_errors(
        "Muon",
        invalid=MUON_INVALID,
        valid=MUON_VALID,
        rule='lr, momentum and weight_decay must be >= 0; adjust_lr_fn None, "original" or '
        '"match_rms_adamw"',
        shape=(3, 3),
    )
    return dataclasses.replace(part, judge=judge_muon_hyperparameters)


def judge_muon_hyperparameters(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """:func:`core.interface.judge_value_errors`, naming the mistake when nothing is refused."""
    try:
        judge_value_errors(part, outcomes)
    except CheckFailed as failure:
        message = str(failure)
        if "should raise ValueError" in message:
            message += f"{LOOKS_LIKE}{MUON_DIRECT['muon/no_validation']}"
        raise CheckFailed(message) from None


# --- split_params ------------------------------------------------------------------------------


def split(graded: Sequence[str]) -> Part:
    """The two lists of ``split_params`` on the ``graded`` models, as sets of names.

    The student's function runs on every model, so that the diagnosis can tell mistakes
    apart that coincide on some models (every 2-D parameter and the output layer on MLPs).
    """
    labels = list(SPLIT_MODELS)

    def reference() -> dict[str, tuple[list[str], list[str]]]:
        found = {}
        for label in labels:
            model = build_model(SPLIT_MODELS[label])
            found[label] = names_of(model, split_reference(model))
        return found

    return Part(
        "week08.produce:split_names",
        judge_split,
        inputs={"models": [SPLIT_MODELS[label] for label in labels]},
        reference=reference,
        context={"labels": labels, "graded": tuple(graded), "mistakes": SPLIT_MISTAKES},
    )


def judge_split(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`split`."""
    got = dict(zip(part.context["labels"], outcomes, strict=True))
    for label in part.context["graded"]:
        have, (want_muon, want_adamw) = got[label], part.expected[label]
        if "error" in have:
            raise CheckFailed(f"on {label}, split_params raised {error_text(have['error'])}.")
        muon, adamw = [str(n) for n in have["muon"]], [str(n) for n in have["adamw"]]
        if sorted(muon) == sorted(want_muon) and sorted(adamw) == sorted(want_adamw):
            continue
        mistake = identify_split(got, part.context["mistakes"])
        hint = f"{LOOKS_LIKE}{mistake.sentence}" if mistake else ""
        if sorted(muon) != sorted(want_muon):
            which, mine, theirs = "Muon's", muon, want_muon
        else:
            which, mine, theirs = "AdamW's", adamw, want_adamw
        extra = sorted(set(mine) - set(theirs))
        missing = [n for n in theirs if n not in mine]
        detail = f"extra {extra}, missing {missing}" if extra or missing else "some twice"
        raise CheckFailed(
            f"on {label}, {which} list should hold {theirs}; yours holds {mine} ({detail}).{hint}"
        )


def identify_split(
    got: dict[str, dict[str, Any]], mistakes: Sequence[Mistake] = SPLIT_MISTAKES
) -> Mistake | None:
    """The catalogued split whose lists equal the student's on every model."""
    for mistake in mistakes:
        for label, spec in SPLIT_MODELS.items():
            have = got[label]
            if "error" in have:
                break
            model = build_model(spec)
            want = names_of(model, mistake.rule(model))
            if (sorted(map(str, have["muon"])), sorted(map(str, have["adamw"]))) != (
                sorted(want[0]),
                sorted(want[1]),
            ):
                break
        else:
            return mistake
    return None


# --- factored_second_moment --------------------------------------------------------------------

_FACTORED_ENTRIES = ("row_var", "col_var", "the estimate")


def factored() -> Part:
    """row_var, col_var and the estimate after every call, against torch's formula."""
    return _guarded(
        "factored_runs",
        judge_factored,
        {"cases": [case.request() for case in FACTORED_CASES]},
        reference=lambda: _on_factored_cases(factored_reference),
        context={"mistakes": FACTORED_MISTAKES},
    )


def _on_factored_cases(function: Callable[..., torch.Tensor]) -> list[dict[str, Any]]:
    """What ``function`` (torch's formula, or a mistake's rule) gives where the student's
    function runs: :func:`factored_runs` of every case's request."""
    return factored_runs(function, [case.request() for case in FACTORED_CASES])


def _factored_first_difference(
    have: dict[str, Any], want: dict[str, Any]
) -> tuple[float, int, int] | None:
    """``(error, call, entry)`` of the first entry beyond TOL_F64 (``None`` if none; a run
    that raised counts as equal to one that raised too)."""
    if "error" in have or "error" in want:
        return None if "error" in have and "error" in want else (math.inf, 0, 0)
    if len(have["steps"]) != len(want["steps"]):
        return math.inf, len(have["steps"]), 0
    for t, (mine, theirs) in enumerate(zip(have["steps"], want["steps"], strict=True)):
        for k, (h, w) in enumerate(zip(mine, theirs, strict=True)):
            err = rel_err(h, w, floor=1e-300)
            if not err <= TOL_F64:
                return err, t, k
    return None


def judge_factored(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`factored`."""
    if len(outcomes) != len(FACTORED_CASES):
        raise CheckFailed("the factored_second_moment check did not run to the end.")
    for case, have, want in zip(FACTORED_CASES, outcomes, part.expected, strict=True):
        difference = _factored_first_difference(have, want)
        if difference is None:
            continue
        err, t, k = difference
        if "error" in have:
            detail = f"your factored_second_moment {_raised(have['error'])}."
        else:
            detail = (
                f"after call {t + 1}, {_FACTORED_ENTRIES[k]} is off by {err:.3g} relative to "
                f"torch.optim.Adafactor's (allowed {TOL_F64:.3g})."
            )
        mistake = identify_factored(outcomes, part.context["mistakes"])
        hint = f"{LOOKS_LIKE}{mistake.sentence}" if mistake else ""
        raise CheckFailed(f"on {case.label}, {detail}{hint}")


def identify_factored(
    outcomes: list[dict[str, Any]], mistakes: Sequence[Mistake] = FACTORED_MISTAKES
) -> Mistake | None:
    """The catalogued rule that reproduces the student's results on every case it can run (a
    rule that raises on a case explains a student's error there)."""
    for mistake in mistakes:
        wrong = _on_factored_cases(mistake.rule)
        if all(
            _factored_first_difference(have, want) is None
            for have, want in zip(outcomes, wrong, strict=True)
        ):
            return mistake
    return None


# --- the notebook's Adafactor against torch.optim.Adafactor -------------------------------------


def adafactor() -> Part:
    """The given Adafactor class, with the student's function: state and steps vs torch's."""
    requests = [case.request() for case in ADAFACTOR_CASES]
    return _guarded(
        "adafactor_runs",
        judge_adafactor,
        {"cases": requests},
        reference=lambda: [adafactor_run(torch.optim.Adafactor, r) for r in requests],
    )


def judge_adafactor(part: Part, runs: list[dict[str, Any]]) -> None:
    """See :func:`adafactor`."""
    if len(runs) != len(ADAFACTOR_CASES):
        raise CheckFailed("the Adafactor check did not run to the end.")
    for case, run, reference in zip(ADAFACTOR_CASES, runs, part.expected, strict=True):
        if run["error"] is not None:
            raise CheckFailed(f"on {case.label}, the Adafactor step {_raised(run['error'])}.")
        initial = adafactor_initial(case.request())
        for t in range(case.steps):
            for i, shape in enumerate(case.shapes):
                have, want = run["state"][t][i], reference["state"][t][i]
                if sorted(have) != sorted(want):
                    raise CheckFailed(
                        f"on {case.label}, after step {t + 1} the state of the tensor {shape} "
                        f"holds {sorted(have)}; torch's holds {sorted(want)}."
                    )
                for key in want:
                    if not rel_err(have[key], want[key], floor=1e-300) <= case.tolerance:
                        raise CheckFailed(
                            f"on {case.label}, after step {t + 1}, {key} of the tensor {shape} "
                            "differs from torch.optim.Adafactor's (see the "
                            "factored_second_moment checks)."
                        )
                start = initial[i] if t == 0 else reference["params"][t - 1][i]
                target = reference["params"][t][i]
                size = max((target - start).norm().item(), 1e-300)
                err = step_error(run["params"][t][i], target, size)
                if not err <= case.tolerance:
                    raise CheckFailed(
                        f"on {case.label}, step {t + 1} of the tensor {shape} differs from "
                        f"torch.optim.Adafactor's by {err:.3g} of the step's size."
                    )


# --- optimizer_state_bytes ---------------------------------------------------------------------


def state_bytes() -> Part:
    """Every optimizer, shape and dtype of the grid: exact bytes, or ValueError for Muon."""
    return _guarded(
        "state_byte_calls",
        judge_state_bytes,
        {"calls": [{"args": [name, shape, dtype]} for name, shape, dtype in MEMORY_GRID]},
        reference=lambda: [memory_reference(*key) for key in MEMORY_GRID],
        context={"mistakes": MEMORY_MISTAKES},
    )


def _answer(outcome: dict[str, Any]) -> Any:
    """A count as compared: an int, ``RAISES``, or a description of anything else."""
    error = outcome.get("error")
    if error:
        if _switched_off(error):
            return f"a call of {_switched_off(error)}"
        return RAISES if error.get("value_error") else error_text(error)
    value = outcome.get("value")
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return f"a {type(value).__name__}"


def _rule_answer(rule: Callable, name: str, shape: Any, dtype: torch.dtype) -> Any:
    try:
        return rule(name, shape, dtype)
    except ValueError:
        return RAISES


def judge_state_bytes(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`state_bytes`."""
    if len(outcomes) != len(MEMORY_GRID):
        raise CheckFailed("the optimizer_state_bytes check did not run to the end.")
    got = [_answer(outcome) for outcome in outcomes]
    for (name, shape, dtype), have, want in zip(MEMORY_GRID, got, part.expected, strict=True):
        if have == want:
            continue
        mistake = next(
            (
                m
                for m in part.context["mistakes"]
                if [_rule_answer(m.rule, *key) for key in MEMORY_GRID] == got
            ),
            None,
        )
        hint = f"{LOOKS_LIKE}{mistake.sentence}" if mistake else ""
        raise CheckFailed(
            f"{name} on a {dtype_name(dtype)} parameter of shape {shape}: expected {want}, "
            f"got {have}.{hint}"
        )


def state_bytes_own() -> Part:
    """The counts equal what the student's Muon and the notebook's Adafactor hold, which must
    be what torch's hold (else the optimizer, not the count, is wrong)."""
    return _guarded("memory_own", judge_state_bytes_own, {"spec": MEMORY_OWN})


def judge_state_bytes_own(part: Part, rows: list[dict[str, Any]]) -> None:
    """See :func:`state_bytes_own`."""
    sizes = part.inputs["spec"]["sizes"]
    for row in rows:
        name = row["optimizer"]
        if "error" in row:
            raise CheckFailed(
                f"your {name} {_raised(row['error'])} on mlp({sizes}) in {row['dtype']}."
            )
        shape = tuple(int(s) for s in row["shape"])
        where = f"{row['param']} {shape} {row['dtype']}"
        want = memory_reference(name, shape, DTYPES[row["dtype"]])
        held = row["held"]
        if held != want:
            extra = ""
            if name == "Muon" and held == want + 4:
                extra = " (torch's Muon keeps no step count)"
            raise CheckFailed(
                f"your {name} holds {held} bytes of state for {where}; torch's holds {want}{extra}."
            )
        counted = _answer(row["counted"])
        if counted != held:
            raise CheckFailed(
                f"{name} holds {held} bytes for {where}; optimizer_state_bytes says {counted}."
            )
