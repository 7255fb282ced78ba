"""Hidden checks for Week 4: Adam, AdamW, checkpoints that resume exactly, optimizer memory.

Exercise ids (grade ids in the notebook start with them): ``adam``, ``adamw``,
``resume_training``, ``state_bytes``.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from course_grading import week04_torch as ref
from course_grading.compare import CheckFailed, first_difference
from course_grading.guards import forbid_torch_optim, require_own_class
from course_grading.interface_checks import check_closure, check_signature, check_value_errors
from course_grading.optimizer_checks import check_against_torch
from course_grading.runs import Case, make_model
from course_grading.week04_mistakes import ADAM_MISTAKES, ADAMW_MISTAKES

ADAM_DEFAULTS = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
}
ADAMW_DEFAULTS = {**ADAM_DEFAULTS, "weight_decay": 1e-2}


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` of the fixed mini-batches every check trains on."""
    return ref.check_batches(ref.BATCHES)[:n]


_NAN_HINT = (
    " This looks like a typical mistake: NaN or inf after the first step means the bias "
    "correction divided by zero (1 - beta**t is 0 for t = 0): increase the step counter "
    "before you use it."
)


@contextlib.contextmanager
def _own_code(answer: str) -> Iterator[None]:
    """Run student code with torch.optim's updates blocked and warnings kept off stderr."""
    __tracebackhide__ = True
    with forbid_torch_optim(answer), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _cached_runs(reference: str, cases: Sequence[Case]) -> list | None:
    """The reference runs from Week 4's one reference process, if it computed all of them."""
    runs = ref.references()["runs"]
    keys = [ref.case_key(reference, case) for case in cases]
    if all(key in runs for key in keys):
        return [runs[key] for key in keys]
    return None


def _against_torch(cls: Any, answer: str, cases: Sequence[Case]) -> None:
    __tracebackhide__ = True
    reference = f"torch.optim.{answer}"
    mistakes = ADAM_MISTAKES if answer == "Adam" else ADAMW_MISTAKES
    defaults = ADAM_DEFAULTS if answer == "Adam" else ADAMW_DEFAULTS
    cases = list(cases)
    try:
        check_against_torch(
            cls, answer, reference, cases, mistakes, defaults, _cached_runs(reference, cases)
        )
    except CheckFailed as failure:
        message = str(failure)
        if "typical mistake" not in message and (
            any(f" is {bad} with your" in message for bad in ("nan", "inf", "-inf"))
        ):
            message += _NAN_HINT
        raise CheckFailed(message) from None


def _call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    __tracebackhide__ = True
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(f"{what} raised {type(exc).__name__}: {exc}") from None


# --- signatures and validation -----------------------------------------------------------------


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


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _check_validation(cls: Any, answer: str) -> None:
    __tracebackhide__ = True
    rule = "betas must each lie in [0, 1); lr, eps and weight_decay must not be negative"
    check_value_errors(cls, answer, _INVALID, _VALID, rule)


# --- closure, missing gradients, state --------------------------------------------------------


def _check_intermittent(cls: Any, answer: str, name: str, kwargs: dict[str, Any]) -> None:
    __tracebackhide__ = True
    expected = ref.references()["intermittent"][ref.reference_key(name, kwargs)]
    with _own_code(answer):
        actual = _call(f"your {answer}", ref.run_intermittent, cls, kwargs)
    diff = first_difference(actual, expected)
    if diff is not None:
        raise CheckFailed(
            "[parameters that get no gradient on some steps] "
            + diff.describe(f"torch.optim.{answer}")
            + " A parameter whose .grad is None is skipped and its step count does not advance:"
            ' each parameter counts its own steps, in its own state (state["step"]), not one '
            "counter for the whole optimizer."
        )


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _check_state(cls: Any, answer: str, kwargs: dict[str, Any]) -> None:
    __tracebackhide__ = True
    expected = ref.references()["state"][ref.reference_key("Adam", kwargs)]
    with _own_code(answer):
        model, opt = _call(f"your {answer}", ref.run_for_state, cls, kwargs)
    where = f"after {ref.STATE_STEPS} steps with {_kwargs_text(kwargs)} and a frozen first layer"
    state = getattr(opt, "state", None)
    if not hasattr(state, "get"):
        raise CheckFailed(f"{where}, your {answer} has no `state` dict.")
    actual = ref.state_by_name(model, opt)
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
        step = got["step"]
        if not isinstance(step, torch.Tensor) or step.dim() != 0:
            raise CheckFailed(
                f"{where}, state[\"step\"] of '{name}' is {_describe_value(step)}; keep it as a "
                "0-d tensor as torch does (torch.tensor(0.0)), so that it is saved and counted "
                "with the rest of the state."
            )
        if float(step) != float(want["step"]):
            raise CheckFailed(
                f"{where}, state[\"step\"] of '{name}' is {float(step):g}, expected "
                f"{float(want['step']):g} (one per step that parameter took)."
            )
        for key, tensor in want.items():
            if key == "step":
                continue
            value = got[key]
            if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
                raise CheckFailed(
                    f"{where}, state[{key!r}] of '{name}' should be a tensor shaped like the "
                    f"parameter {tuple(tensor.shape)}; yours is {_describe_value(value)}."
                )
            if not torch.allclose(value.to(tensor.dtype), tensor, rtol=1e-7, atol=1e-12):
                gap = float((value.to(tensor.dtype) - tensor).abs().max())
                raise CheckFailed(
                    f"{where}, state[{key!r}] of '{name}' differs from torch.optim.Adam's by up "
                    f"to {gap:.3g}."
                )


def _check_round_trip(cls: Any, answer: str, kwargs: dict[str, Any]) -> None:
    """state_dict -> torch.save -> torch.load -> load_state_dict continues exactly."""
    __tracebackhide__ = True
    batches = _batches(12)
    loss_fn = nn.CrossEntropyLoss()

    def train(model: nn.Module, opt: Any, part: list) -> None:
        for X, y in part:
            opt.zero_grad()
            loss_fn(model(X), y).backward()
            opt.step()

    with _own_code(answer):
        model = make_model(3)
        opt = _call(f"{answer}(params, {_kwargs_text(kwargs)})", cls, model.parameters(), **kwargs)
        _call(f"your {answer}", train, model, opt, batches[:6])
        buffer = io.BytesIO()
        try:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
            buffer.seek(0)
            checkpoint = torch.load(buffer)
        except Exception as exc:
            raise CheckFailed(
                f"your {answer}'s state_dict() could not go through torch.save and torch.load "
                f"({type(exc).__name__}: {exc}). Keep only tensors and numbers in the state."
            ) from None
        resumed = make_model(99)
        resumed.load_state_dict(checkpoint["model"])
        opt2 = cls(resumed.parameters(), **kwargs)
        _call("load_state_dict", opt2.load_state_dict, checkpoint["optimizer"])
        _call(f"your {answer}", train, model, opt, batches[6:])
        _call(f"your resumed {answer}", train, resumed, opt2, batches[6:])
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        if not torch.allclose(p, q, rtol=1e-12, atol=1e-14):
            raise CheckFailed(
                f"a model resumed from state_dict() (saved with torch.save after 6 steps) ends "
                f"6 steps later with different weights in '{name}' than the uninterrupted run "
                f"(by up to {float((p - q).abs().max()):.3g}): everything the update uses must "
                "live in self.state[p] or the param groups."
            )


# --- adam ----------------------------------------------------------------------------------------


def check_adam_basic(Adam: Any) -> None:
    """Adam over many steps: defaults, other lr and betas, a large eps."""
    __tracebackhide__ = True
    require_own_class(Adam, "Adam")
    check_signature(Adam, "Adam", ADAM_DEFAULTS, "torch.optim.Adam")
    _against_torch(Adam, "Adam", ref.ADAM_CASES["basic"])


def check_adam_branches(Adam: Any) -> None:
    """L2 weight decay, amsgrad, maximize, and all three together."""
    __tracebackhide__ = True
    _against_torch(Adam, "Adam", ref.ADAM_CASES["branches"])


def check_adam_groups_frozen(Adam: Any) -> None:
    """Frozen layers, param groups, step(closure), parameters that skip some steps."""
    __tracebackhide__ = True
    _against_torch(Adam, "Adam", ref.ADAM_CASES["groups_frozen"])
    # Adam's first step moves each coordinate by about lr against its gradient [2, -4]:
    # lr * g / (|g| + eps).
    check_closure(Adam, "Adam", {"lr": 0.1}, expected=(1 - 0.2 / (2 + 1e-8), -2 + 0.4 / (4 + 1e-8)))
    _check_intermittent(Adam, "Adam", *ref.INTERMITTENT_CASES[0])


def check_adam_state(Adam: Any) -> None:
    """The per-parameter state matches torch's, and survives torch.save / load_state_dict."""
    __tracebackhide__ = True
    require_own_class(Adam, "Adam")
    for _name, kwargs in ref.STATE_CASES:
        _check_state(Adam, "Adam", kwargs)
    _check_round_trip(Adam, "Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01})


def check_adam_validation(Adam: Any) -> None:
    """ValueError naming the parameter for invalid lr, eps, betas, weight_decay."""
    __tracebackhide__ = True
    _check_validation(Adam, "Adam")


# --- adamw ---------------------------------------------------------------------------------------


def check_adamw_basic(AdamW: Any) -> None:
    """AdamW over many steps: defaults (weight_decay=0.01) and stronger decay."""
    __tracebackhide__ = True
    require_own_class(AdamW, "AdamW")
    check_signature(AdamW, "AdamW", ADAMW_DEFAULTS, "torch.optim.AdamW")
    _against_torch(AdamW, "AdamW", ref.ADAMW_CASES["basic"])


def check_adamw_branches(AdamW: Any) -> None:
    """amsgrad, maximize, no decay, and all together."""
    __tracebackhide__ = True
    _against_torch(AdamW, "AdamW", ref.ADAMW_CASES["branches"])


def check_adamw_groups_frozen(AdamW: Any) -> None:
    """Frozen layers, param groups with their own decay, parameters that skip steps, ValueErrors."""
    __tracebackhide__ = True
    _against_torch(AdamW, "AdamW", ref.ADAMW_CASES["groups_frozen"])
    _check_intermittent(AdamW, "AdamW", *ref.INTERMITTENT_CASES[1])
    _check_validation(AdamW, "AdamW")


# --- resume_training -----------------------------------------------------------------------------


class _Factory:
    """A model or optimizer factory that counts its calls."""

    def __init__(self, build: Callable[..., Any]) -> None:
        self.build = build
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.build(*args)


def _straight_losses(
    make_optimizer: Callable[..., Any], batches: list, fresh_optimizer_at: int | None = None
) -> list[float]:
    model = make_model(5)
    opt = make_optimizer(model.parameters())
    losses = []
    for i, (X, y) in enumerate(batches):
        if i == fresh_optimizer_at:
            opt = make_optimizer(model.parameters())
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def _run_resumed(
    train_resumed: Callable[..., Any], label: str, make_optimizer: Callable, **kwargs: Any
) -> tuple[list[float], dict, _Factory, _Factory]:
    __tracebackhide__ = True
    make_model_f = _Factory(lambda: make_model(5))
    make_opt_f = _Factory(make_optimizer)
    batches = _batches(14)
    with tempfile.TemporaryDirectory(prefix="course-resume-") as tmp:
        path = Path(tmp, "checkpoint.pt")
        with _own_code(label):
            losses = _call(
                "train_resumed", train_resumed, make_model_f, make_opt_f, batches, 6, path, **kwargs
            )
        if not path.is_file():
            raise CheckFailed(f"train_resumed did not write the checkpoint file ({label}).")
        try:
            checkpoint = torch.load(path)
        except Exception as exc:
            raise CheckFailed(
                f"the checkpoint could not be read back with torch.load ({label}): "
                f"{type(exc).__name__}: {exc}"
            ) from None
    try:
        losses = [float(x) for x in losses]
    except (TypeError, ValueError):
        raise CheckFailed(
            "train_resumed should return a list of floats, one loss per batch."
        ) from None
    if len(losses) != len(batches):
        raise CheckFailed(
            f"train_resumed should return one loss per batch: {len(batches)} batches, "
            f"{len(losses)} losses ({label})."
        )
    return losses, checkpoint, make_model_f, make_opt_f


def _compare_losses(
    got: list[float], want: list[float], label: str, what: str, hint: str = ""
) -> None:
    __tracebackhide__ = True
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-14):
            part = "before the checkpoint" if i < 6 else "after resuming"
            raise CheckFailed(
                f"{label}: the loss of batch {i} ({part}) is {a:.10g}, but {what} gives "
                f"{b:.10g}.{hint if i >= 6 else ''}"
            )


def check_resume_training(train_resumed: Callable[..., Any], Adam: Any, AdamW: Any) -> None:
    """Resumed with the optimizer state, training matches an uninterrupted run step for step."""
    __tracebackhide__ = True
    setups = (
        ("your Adam(lr=0.01)", lambda params: Adam(params, lr=0.01)),
        (
            "your AdamW(lr=0.01, weight_decay=0.1, amsgrad=True)",
            lambda params: AdamW(params, lr=0.01, weight_decay=0.1, amsgrad=True),
        ),
    )
    for label, make_optimizer in setups:
        with _own_code(label):
            want = _call(label, _straight_losses, make_optimizer, _batches(14))
        got, checkpoint, models, opts = _run_resumed(train_resumed, label, make_optimizer)
        if not isinstance(checkpoint, dict) or not {"model", "optimizer"} <= set(checkpoint):
            keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint)
            raise CheckFailed(
                f'the checkpoint should be a dict with the keys "model" and "optimizer" (the two '
                f"state_dicts); it has {keys}."
            )
        if models.calls != 2 or opts.calls != 2:
            raise CheckFailed(
                f"train_resumed called make_model {models.calls} and make_optimizer "
                f"{opts.calls} times: build the model and optimizer once before the checkpoint "
                "and once more to resume (fresh objects, as a new process would)."
            )
        _compare_losses(
            got,
            want,
            label,
            "uninterrupted training",
            " Resuming must restore both state_dicts, the model's and the optimizer's.",
        )


def check_resume_training_without_state(
    train_resumed: Callable[..., Any], Adam: Any, AdamW: Any
) -> None:
    """Resumed without the optimizer state, Adam starts over and training differs."""
    __tracebackhide__ = True
    for label, make_optimizer in (
        ("your Adam(lr=0.01)", lambda params: Adam(params, lr=0.01)),
        ("your AdamW(lr=0.003)", lambda params: AdamW(params, lr=0.003)),
    ):
        with _own_code(label):
            straight = _call(label, _straight_losses, make_optimizer, _batches(14))
            fresh = _call(label, _straight_losses, make_optimizer, _batches(14), 6)
        got, _, models, _ = _run_resumed(
            train_resumed, label, make_optimizer, load_optimizer_state=False
        )
        if models.calls != 2:
            raise CheckFailed(
                f"train_resumed called make_model {models.calls} times: resume in a fresh model."
            )
        if all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(got, straight, strict=True)):
            raise CheckFailed(
                f"{label}: with load_optimizer_state=False, the losses still equal the "
                "uninterrupted run: the resumed optimizer must start fresh (no state loaded)."
            )
        _compare_losses(got, fresh, label, "resuming the model with a fresh optimizer")


# --- state_bytes ---------------------------------------------------------------------------------

_BIG = 7_000_000_000


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


def check_state_bytes(state_bytes: Callable[..., Any]) -> None:
    """state_bytes against the state torch.optim really holds after a step."""
    __tracebackhide__ = True
    measured = ref.references()["state_bytes"]
    for name, kwargs in ref.STATE_BYTES_OPTIMIZERS:
        for dtype in ref.STATE_BYTES_DTYPES:
            key = f"{ref.reference_key(name, kwargs)}|{dtype}"
            small, mid = measured[f"{key}|1"], measured[f"{key}|1000"]
            per_element = (mid - small) // 999
            expected = {n: measured[f"{key}|{n}"] for n in ref.STATE_BYTES_SIZES}
            expected[_BIG] = small + per_element * (_BIG - 1)
            for numel, want in expected.items():
                call = f"state_bytes({name!r}, {numel}, torch.{dtype}{_kw(kwargs)})"
                got = _count(state_bytes, call, name, numel, getattr(torch, dtype), kwargs)
                if isinstance(got, (int, float)) and got == want:
                    continue
                raise CheckFailed(
                    f"{call} returned {got!r}; torch.optim.{name} holds {want} bytes of state for "
                    f"such a parameter after one step."
                    + _bytes_hint(got, want, numel, dtype, name, kwargs)
                )


def _count(
    state_bytes: Callable[..., Any],
    call: str,
    name: str,
    numel: int,
    dtype: torch.dtype,
    kwargs: dict,
) -> Any:
    __tracebackhide__ = True
    try:
        with _own_code("state_bytes"):
            return _call(call, state_bytes, name, numel, dtype, **kwargs)
    except CheckFailed as failure:
        if "called torch.optim" not in str(failure):
            raise
        raise CheckFailed(
            f"{call} stepped a torch.optim optimizer to measure it: compute the count from "
            "the rule you measured instead (the hidden test asks for sizes no memory holds)."
        ) from None


def _kw(kwargs: dict) -> str:
    return "".join(f", {k}={v!r}" for k, v in kwargs.items())


def check_state_bytes_own(state_bytes: Callable[..., Any], Adam: Any, AdamW: Any) -> None:
    """state_bytes agrees with the tensors your own Adam and AdamW hold."""
    __tracebackhide__ = True
    for cls, name in ((Adam, "Adam"), (AdamW, "AdamW")):
        for kwargs in ({}, {"amsgrad": True}):
            for dtype in (torch.float32, torch.float64):
                _check_own_bytes(state_bytes, cls, name, kwargs, dtype)


def _check_own_bytes(
    state_bytes: Callable[..., Any], cls: Any, name: str, kwargs: dict, dtype: torch.dtype
) -> None:
    __tracebackhide__ = True
    model = make_model(0).to(dtype)
    model[0].requires_grad_(False)
    label = f"your {name}({_kwargs_text(kwargs)})"
    with _own_code(name):
        opt = _call(label, cls, model.parameters(), lr=0.01, **kwargs)
        for X, y in _batches(2):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X.to(dtype)), y).backward()
            _call(label, opt.step)
    for pname, p in model.named_parameters():
        state = opt.state.get(p, {})
        seen: dict[int, torch.Tensor] = {}
        stack = list(state.values())
        while stack:
            value = stack.pop()
            if isinstance(value, torch.Tensor):
                seen[id(value)] = value
            elif isinstance(value, (list, tuple)):
                stack.extend(value)
            elif isinstance(value, dict):
                stack.extend(value.values())
        held = sum(t.numel() * t.element_size() for t in seen.values())
        if not p.requires_grad:
            if held:
                raise CheckFailed(f"{label} keeps state for the frozen parameter '{pname}'.")
            continue
        call = f"state_bytes({name!r}, {p.numel()}, {p.dtype}{_kw(kwargs)})"
        counted = _count(state_bytes, call, name, p.numel(), p.dtype, kwargs)
        if counted != held:
            raise CheckFailed(
                f"after two steps, {label} holds {held} bytes of tensors for the "
                f"{str(dtype).removeprefix('torch.')} parameter '{pname}' ({p.numel()} elements), "
                f"but state_bytes({name!r}, {p.numel()}, {dtype}{_kw(kwargs)}) says {counted}. "
                "Is every state entry a tensor as in torch (the step a 0-d float32 tensor), "
                "and does your count match torch's?"
            )
