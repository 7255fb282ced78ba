"""Trusted side: Week 4's hidden checks, by test cell.

Exercise ids (grade ids in the notebook start with them): ``adam``, ``adamw``,
``resume_training``, ``state_bytes``. Week 4 hides every ``torch.optim`` optimizer from the
sandbox: Adam and AdamW must be the student's own, and ``state_bytes`` must count, not measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from course_grading.core.checks import CheckFailed, Checks, Part, error_text
from course_grading.core.compare import first_difference
from course_grading.core.interface import closure, own_class, value_errors
from course_grading.core.optimizers import OptimizerSpec
from course_grading.core.references import digit_batches
from course_grading.core.tables import optimizer_cells
from course_grading.core.torch_hiding import TORCH_OPTIMIZERS
from course_grading.week04 import cases
from course_grading.week04.mistakes import ADAM_MISTAKES, ADAMW_MISTAKES

HIDDEN_TORCH = TORCH_OPTIMIZERS

_NAN_HINT = (
    " This looks like a typical mistake: NaN or inf after the first step means the bias "
    "correction divided by zero (1 - beta**t is 0 for t = 0): increase the step counter "
    "before you use it."
)


def explain_nan(message: str) -> str:
    """Add the step-counter hint to a difference where the student's value is NaN or inf."""
    if any(f" is {bad} with your" in message for bad in ("nan", "inf", "-inf")):
        return message + _NAN_HINT
    return message


ADAM = OptimizerSpec.of("Adam", ADAM_MISTAKES, explain=explain_nan)
ADAMW = OptimizerSpec.of("AdamW", ADAMW_MISTAKES, explain=explain_nan)

_INVALID = (
    ({"lr": -0.001}, ("lr", "learning rate")),
    ({"eps": -1e-8}, ("eps", "epsilon")),
    ({"betas": (1.0, 0.999)}, ("beta",)),
    ({"betas": (-0.1, 0.999)}, ("beta",)),
    ({"betas": (0.9, 1.0)}, ("beta",)),
    ({"betas": (0.9, -0.5)}, ("beta",)),
    ({"weight_decay": -0.01}, ("weight_decay", "weight decay")),
)
_VALID = ({"lr": 0.0}, {"eps": 0.0}, {"betas": (0.0, 0.0)}, {"weight_decay": 0.0})
_RULE = "betas must each lie in [0, 1); lr, eps and weight_decay must not be negative"


def checks() -> Checks:
    """Every test cell's hidden check."""
    return {
        **optimizer_cells(
            ADAM,
            cases.ADAM_CASES,
            then={
                "adam_test_groups_frozen": [
                    # Adam's first step moves each coordinate by about lr against its gradient
                    # [2, -4]: lr * g / (|g| + eps).
                    closure(
                        "Adam", {"lr": 0.1}, expected=(1 - 0.2 / (2 + 1e-8), -2 + 0.4 / (4 + 1e-8))
                    ),
                    intermittent(ADAM),
                ]
            },
        ),
        "adam_test_state": [
            own_class("Adam"),
            *(state(ADAM, kwargs) for kwargs in cases.STATE_CASES),
            round_trip(ADAM),
        ],
        "adam_test_validation": [validation("Adam")],
        **optimizer_cells(
            ADAMW,
            cases.ADAMW_CASES,
            then={"adamw_test_groups_frozen": [intermittent(ADAMW), validation("AdamW")]},
        ),
        "resume_training_test": [resume_training(with_state=True)],
        "resume_training_test_without_state": [resume_training(with_state=False)],
        "state_bytes_test_torch": [state_bytes_torch()],
        "state_bytes_test_own": [state_bytes_own()],
    }


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _raised(what: str, error: dict[str, Any]) -> CheckFailed:
    return CheckFailed(f"{what} raised {error_text(error)}")


def validation(answer: str) -> Part:
    """ValueError naming the parameter for invalid lr, eps, betas, weight_decay."""
    return value_errors(answer, _INVALID, _VALID, _RULE)


# --- parameters that get no gradient on some steps ---------------------------------------------


def intermittent(spec: OptimizerSpec) -> Part:
    """A run in which some parameters get no gradient on some steps matches torch's."""
    kwargs = cases.INTERMITTENT_CASES[spec.answer]
    return Part(
        "week04.produce:intermittent_run",
        judge_intermittent,
        inputs={
            "kwargs": kwargs,
            "batches": cases.intermittent_batches(),
            "drop": [list(layers) for layers in cases.INTERMITTENT_DROP],
        },
        reference=lambda: cases.intermittent_reference(spec.answer, kwargs),
        context={"spec": spec},
    )


def judge_intermittent(part: Part, found: dict[str, Any]) -> None:
    """See :func:`intermittent`."""
    spec: OptimizerSpec = part.context["spec"]
    if found.get("error") is not None:
        raise _raised(f"your {spec.answer}", found["error"])
    diff = first_difference(found["run"], part.expected)
    if diff is not None:
        raise CheckFailed(
            "[parameters that get no gradient on some steps] "
            + diff.describe(spec.reference)
            + " A parameter whose .grad is None is skipped and its step count does not advance:"
            ' each parameter counts its own steps, in its own state (state["step"]), not one '
            "counter for the whole optimizer."
        )


# --- the state after some steps ------------------------------------------------------------------


def state(spec: OptimizerSpec, kwargs: dict[str, Any]) -> Part:
    """After some steps with a frozen first layer, the state per parameter is torch's."""
    return Part(
        "week04.produce:state_after",
        judge_state,
        inputs={
            "kwargs": kwargs,
            "batches": cases.state_batches(),
            "frozen": list(cases.STATE_FROZEN),
        },
        reference=lambda: cases.state_reference(kwargs),
        context={"spec": spec},
    )


def _describe_value(entry: dict[str, Any]) -> str:
    value = entry["value"]
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"a {entry['type']}"


def judge_state(part: Part, found: dict[str, Any]) -> None:
    """See :func:`state`."""
    answer = part.context["spec"].answer
    kwargs = part.inputs["kwargs"]
    if found.get("error") is not None:
        raise _raised(f"your {answer}", found["error"])
    where = f"after {cases.STATE_STEPS} steps with {_kwargs_text(kwargs)} and a frozen first layer"
    if not found["has_state"]:
        raise CheckFailed(f"{where}, your {answer} has no `state` dict.")
    actual: dict[str, dict[str, Any]] = found["state"]
    expected: dict[str, dict[str, Any]] = part.expected
    for name in actual:
        if name not in expected:
            raise CheckFailed(
                f"{where}, the frozen parameter '{name}' has state {sorted(actual[name])}: a "
                "parameter that never had a gradient should have no state."
            )
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            raise CheckFailed(
                f"{where}, self.state[p] is empty for parameter '{name}': keep \"step\", "
                '"exp_avg" and "exp_avg_sq" in the state of each parameter (the dict '
                "self.state[p]), as torch does."
            )
        if set(got) != set(want):
            raise CheckFailed(
                f"{where}, the state of '{name}' has the keys {sorted(got)}; torch.optim.Adam "
                f"keeps {sorted(want)}. Use the same names, so that state_dicts are compatible."
            )
        step = got["step"]["value"]
        if not isinstance(step, torch.Tensor) or step.dim() != 0:
            raise CheckFailed(
                f"{where}, state[\"step\"] of '{name}' is {_describe_value(got['step'])}; keep "
                "it as a 0-d tensor as torch does (torch.tensor(0.0)), so that it is saved and "
                "counted with the rest of the state."
            )
        want_step = float(want["step"]["value"])
        if float(step) != want_step:
            raise CheckFailed(
                f"{where}, state[\"step\"] of '{name}' is {float(step):g}, expected "
                f"{want_step:g} (one per step that parameter took)."
            )
        for key, entry in want.items():
            if key == "step":
                continue
            tensor = entry["value"]
            value = got[key]["value"]
            if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
                raise CheckFailed(
                    f"{where}, state[{key!r}] of '{name}' should be a tensor shaped like the "
                    f"parameter {tuple(tensor.shape)}; yours is {_describe_value(got[key])}."
                )
            if not torch.allclose(value.to(tensor.dtype), tensor, rtol=1e-7, atol=1e-12):
                gap = float((value.to(tensor.dtype) - tensor).abs().max())
                raise CheckFailed(
                    f"{where}, state[{key!r}] of '{name}' differs from torch.optim.Adam's by up "
                    f"to {gap:.3g}."
                )


# --- state_dict -> torch.save -> torch.load -> load_state_dict ---------------------------------


def round_trip(spec: OptimizerSpec) -> Part:
    """A run resumed from state_dict() through torch.save and torch.load continues exactly."""
    trip = cases.ROUND_TRIP
    return Part(
        "week04.produce:round_trip",
        judge_round_trip,
        inputs={
            "kwargs": trip["kwargs"],
            "batches": digit_batches()[: trip["steps"]],
            "stop": trip["stop"],
            "seed": trip["seed"],
            "resume_seed": trip["resume_seed"],
        },
        context={"spec": spec},
    )


def judge_round_trip(part: Part, found: dict[str, Any]) -> None:
    """See :func:`round_trip`."""
    answer = part.context["spec"].answer
    kwargs, stop = part.inputs["kwargs"], part.inputs["stop"]
    after = len(part.inputs["batches"]) - stop
    if "error" in found:
        error, stage = found["error"], found["stage"]
        if stage == "save":
            raise CheckFailed(
                f"your {answer}'s state_dict() could not go through torch.save and torch.load "
                f"({error_text(error)}). Keep only tensors and numbers in the state."
            )
        what = {
            "construct": f"{answer}(params, {_kwargs_text(kwargs)})",
            "load_state_dict": "load_state_dict",
            "resumed": f"your resumed {answer}",
        }.get(stage, f"your {answer}")
        raise _raised(what, error)
    resumed = found["resumed"]
    for name, p in found["uninterrupted"].items():
        q = resumed[name]
        if not torch.allclose(p, q, rtol=1e-12, atol=1e-14):
            raise CheckFailed(
                f"a model resumed from state_dict() (saved with torch.save after {stop} steps) "
                f"ends {after} steps later with different weights in '{name}' than the "
                f"uninterrupted run (by up to {float((p - q).abs().max()):.3g}): everything the "
                "update uses must live in self.state[p] or the param groups."
            )


# --- resume_training -----------------------------------------------------------------------------


def resume_training(with_state: bool) -> Part:
    """train_resumed with the student's Adam and AdamW: with the optimizer state, training
    matches an uninterrupted run step for step; without it, Adam starts over."""
    setups = []
    table = cases.RESUME_WITH_STATE if with_state else cases.RESUME_WITHOUT_STATE
    for name, kwargs in table:
        setup: dict[str, Any] = {"optimizer": name, "kwargs": kwargs, "train_kwargs": {}}
        if not with_state:
            setup["fresh_at"] = cases.RESUME_STOP
            setup["train_kwargs"] = {"load_optimizer_state": False}
        setups.append(setup)
    return Part(
        "week04.produce:resumed_training",
        judge_resume_training if with_state else judge_resume_training_without_state,
        inputs={
            "setups": setups,
            "batches": digit_batches()[: cases.RESUME_BATCHES],
            "stop": cases.RESUME_STOP,
            "seed": cases.RESUME_SEED,
        },
    )


def _labels(part: Part) -> list[str]:
    return [f"your {s['optimizer']}({_kwargs_text(s['kwargs'])})" for s in part.inputs["setups"]]


def _judge_resumed_run(part: Part, found: dict[str, Any], label: str) -> list[float]:
    """The checks both resume cells share, in the order they were made; the resumed losses."""
    if found.get("straight_error") is not None:
        raise _raised(label, found["straight_error"])
    if found.get("train_error") is not None:
        raise _raised("train_resumed", found["train_error"])
    if not found["wrote_file"]:
        raise CheckFailed(f"train_resumed did not write the checkpoint file ({label}).")
    if found["load_error"] is not None:
        raise CheckFailed(
            f"the checkpoint could not be read back with torch.load ({label}): "
            f"{error_text(found['load_error'])}"
        )
    losses = found["losses"]
    if losses is None:
        raise CheckFailed("train_resumed should return a list of floats, one loss per batch.")
    batches = len(part.inputs["batches"])
    if len(losses) != batches:
        raise CheckFailed(
            f"train_resumed should return one loss per batch: {batches} batches, "
            f"{len(losses)} losses ({label})."
        )
    return [float(x) for x in losses]


def _compare_losses(
    got: list[float], want: list[float], stop: int, label: str, what: str, hint: str = ""
) -> None:
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-14):
            part = "before the checkpoint" if i < stop else "after resuming"
            raise CheckFailed(
                f"{label}: the loss of batch {i} ({part}) is {a:.10g}, but {what} gives "
                f"{b:.10g}.{hint if i >= stop else ''}"
            )


def judge_resume_training(part: Part, found: dict[str, Any]) -> None:
    """See :func:`resume_training` (with the optimizer state)."""
    _judge_resumed_runs(part, found, _judge_with_state)


def judge_resume_training_without_state(part: Part, found: dict[str, Any]) -> None:
    """See :func:`resume_training` (without the optimizer state)."""
    _judge_resumed_runs(part, found, _judge_without_state)


def _judge_resumed_runs(
    part: Part, found: dict[str, Any], judge_run: Callable[[dict, list[float], int, str], None]
) -> None:
    """For each setup, the checks both resume cells share, then ``judge_run``'s."""
    stop = part.inputs["stop"]
    setups = found["setups"]
    for index, label in enumerate(_labels(part)):
        outcome = setups[index]
        got = _judge_resumed_run(part, outcome, label)
        judge_run(outcome, got, stop, label)


def _judge_with_state(outcome: dict[str, Any], got: list[float], stop: int, label: str) -> None:
    checkpoint = outcome["checkpoint"]
    if not checkpoint["complete"]:
        raise CheckFailed(
            'the checkpoint should be a dict with the keys "model" and "optimizer" (the two '
            f"state_dicts); it has {checkpoint['keys']}."
        )
    models, opts = outcome["model_calls"], outcome["optimizer_calls"]
    if models != 2 or opts != 2:
        raise CheckFailed(
            f"train_resumed called make_model {models} and make_optimizer {opts} times: "
            "build the model and optimizer once before the checkpoint and once more to "
            "resume (fresh objects, as a new process would)."
        )
    _compare_losses(
        got,
        [float(x) for x in outcome["straight"]],
        stop,
        label,
        "uninterrupted training",
        " Resuming must restore both state_dicts, the model's and the optimizer's.",
    )


def _judge_without_state(outcome: dict[str, Any], got: list[float], stop: int, label: str) -> None:
    straight = [float(x) for x in outcome["straight"]]
    if outcome["model_calls"] != 2:
        raise CheckFailed(
            f"train_resumed called make_model {outcome['model_calls']} times: resume in a "
            "fresh model."
        )
    if all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(got, straight, strict=True)):
        raise CheckFailed(
            f"{label}: with load_optimizer_state=False, the losses still equal the "
            "uninterrupted run: the resumed optimizer must start fresh (no state loaded)."
        )
    fresh = [float(x) for x in outcome["fresh"]]
    _compare_losses(got, fresh, stop, label, "resuming the model with a fresh optimizer")


# --- state_bytes ---------------------------------------------------------------------------------


def _bytes_hint(got: Any, want: int, numel: int, dtype: str, name: str, kwargs: dict) -> str:
    size = getattr(torch, dtype).itemsize
    if not isinstance(got, (int, float)):
        return " Return a number of bytes."
    if got == want - 4:
        return (
            " The step counter is missing: torch keeps it as a 0-d float32 tensor (4 bytes) per "
            "parameter."
        )
    if got == want + 4:
        return f" {name} keeps no step counter."
    if want % 4 == 0 and got == want - 4 + size and size != 4:
        return " The step tensor is float32 (4 bytes) whatever the parameter's dtype."
    if name == "SGD" and not kwargs.get("momentum") and got > 0:
        return " SGD without momentum keeps no state at all."
    if size != 4 and (want - 4 * (want % size != 0)) * 4 == got * size:
        return f" Count {size} bytes per element for {dtype} (dtype.itemsize)."
    return ""


def _kw(kwargs: dict) -> str:
    return "".join(f", {k}={v!r}" for k, v in kwargs.items())


def _judge_count_error(call: str, error: dict[str, Any]) -> None:
    """``state_bytes`` raised: a switched-off torch.optim optimizer means it measured."""
    if error.get("type") == "SwitchedOff" and "torch.optim" in str(error.get("message")):
        raise CheckFailed(
            f"{call} stepped a torch.optim optimizer to measure it: compute the count from "
            "the rule you measured instead (the hidden test asks for sizes no memory holds)."
        )
    raise _raised(call, error)


def state_bytes_torch() -> Part:
    """state_bytes against the state torch.optim really holds after a step."""
    return Part(
        "week04.produce:state_bytes_calls",
        judge_state_bytes_torch,
        inputs={"calls": cases.state_bytes_calls()},
        reference=cases.state_bytes_reference,
    )


def judge_state_bytes_torch(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`state_bytes_torch`."""
    calls = part.inputs["calls"]
    for index, (spec, want) in enumerate(zip(calls, part.expected, strict=True)):
        name, numel, dtype, kwargs = spec["name"], spec["numel"], spec["dtype"], spec["kwargs"]
        call = f"state_bytes({name!r}, {numel}, torch.{dtype}{_kw(kwargs)})"
        if index >= len(outcomes):
            raise CheckFailed("the state_bytes check did not run to the end.")
        outcome = outcomes[index]
        if "error" in outcome:
            _judge_count_error(call, outcome["error"])
        # Only an int or a float counts (a NumPy number or a tensor is not a number of bytes).
        got = outcome["value"] if outcome["number"] is True else None
        if isinstance(got, (int, float)) and got == want:
            continue
        raise CheckFailed(
            f"{call} returned {outcome['repr']}; torch.optim.{name} holds {want} bytes of state "
            "for such a parameter after one step."
            + _bytes_hint(got, want, numel, dtype, name, kwargs)
        )


def state_bytes_own() -> Part:
    """state_bytes agrees with the tensors the student's own Adam and AdamW hold."""
    runs = [
        {"optimizer": name, "kwargs": kwargs, "dtype": dtype}
        for name in ("Adam", "AdamW")
        for kwargs in cases.OWN_STATE_BYTES_KWARGS
        for dtype in cases.OWN_STATE_BYTES_DTYPES
    ]
    return Part(
        "week04.produce:own_state_bytes",
        judge_state_bytes_own,
        inputs={
            "runs": runs,
            "batches": digit_batches()[: cases.OWN_STATE_BYTES_STEPS],
            "lr": cases.OWN_STATE_BYTES_LR,
            "frozen": list(cases.OWN_STATE_BYTES_FROZEN),
        },
    )


def judge_state_bytes_own(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`state_bytes_own`."""
    steps = len(part.inputs["batches"])
    for index, run in enumerate(part.inputs["runs"]):
        name, kwargs, dtype = run["optimizer"], run["kwargs"], run["dtype"]
        label = f"your {name}({_kwargs_text(kwargs)})"
        if index >= len(outcomes):
            raise CheckFailed("the state_bytes check did not run to the end.")
        outcome = outcomes[index]
        if "error" in outcome:
            raise _raised(label, outcome["error"])
        for param in outcome["params"]:
            pname, numel, held = param["name"], param["numel"], param["held"]
            if not param["requires_grad"]:
                if held:
                    raise CheckFailed(f"{label} keeps state for the frozen parameter '{pname}'.")
                continue
            counted = param["counted"]
            call = f"state_bytes({name!r}, {numel}, torch.{dtype}{_kw(kwargs)})"
            if "error" in counted:
                _judge_count_error(call, counted["error"])
            if counted["value"] != held:
                raise CheckFailed(
                    f"after {_steps_text(steps)} steps, {label} holds {held} bytes of tensors for "
                    f"the {dtype} parameter '{pname}' ({numel} elements), but {call} says "
                    f"{counted['text']}. Is every state entry a tensor as in torch (the step a "
                    "0-d float32 tensor), and does your count match torch's?"
                )


def _steps_text(steps: int) -> str:
    return {1: "one", 2: "two", 3: "three"}.get(steps, str(steps))
