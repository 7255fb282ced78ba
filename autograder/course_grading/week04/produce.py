"""Student side: Week 4's producers (the shared ones are in ``core.produce``).

Each runs the student's code in one of the ways Week 4's checks need and returns what
happened as plain data: a run in which some parameters get no gradient on some steps
(:func:`intermittent_run`), the optimizer's state after some steps (:func:`state_after`), a
``state_dict`` round trip through ``torch.save`` (:func:`round_trip`), the student's
``train_resumed`` (:func:`resumed_training`) and ``state_bytes`` (:func:`state_bytes_calls`,
:func:`own_state_bytes`). The cases and the verdicts are the trusted side's.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from course_grading.core.harness import attempt, plain
from course_grading.core.runs import Batches, Snapshots, make_model, snapshot


def train(
    optimizer_cls: Callable[..., Any],
    kwargs: dict[str, Any],
    batches: Batches,
    drop: Sequence[Sequence[int]] = (),
    frozen: Sequence[int] = (),
) -> tuple[nn.Sequential, Any, Snapshots]:
    """Train the checks' model (seed 0) on ``batches``; the model, optimizer and snapshots.

    ``drop[i]`` lists the layers whose gradients are removed before step ``i``; ``frozen``
    layers never get one. The optimizer gets every parameter, frozen ones included. Both
    sides use this: the student's optimizer here, ``torch.optim``'s on the trusted side.
    """
    model = make_model(0)
    for i in frozen:
        model[i].requires_grad_(False)
    optimizer = optimizer_cls(list(model.parameters()), **kwargs)
    loss_fn = nn.CrossEntropyLoss()
    snaps = [snapshot(model)]
    for step, (X, y) in enumerate(batches):
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        for i in drop[step] if step < len(drop) else ():
            for p in model[i].parameters():
                p.grad = None
        optimizer.step()
        snaps.append(snapshot(model))
    return model, optimizer, snaps


def intermittent_run(
    cls: Any, kwargs: dict[str, Any], batches: Batches, drop: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """The parameters after every step of a run in which some layers skip some steps."""
    result, error = attempt(lambda: train(cls, kwargs, batches, drop)[2])
    return {"error": error} if error is not None else {"run": result}


def state_after(
    cls: Any, kwargs: dict[str, Any], batches: Batches, frozen: Sequence[int]
) -> dict[str, Any]:
    """The optimizer's state per parameter name after training on ``batches``.

    ``state`` maps each parameter that has a non-empty state to its entries, each with its
    value (as plain data) and the name of its type.
    """
    trained, error = attempt(lambda: train(cls, kwargs, batches, frozen=frozen))
    if error is not None:
        return {"error": error}
    model, optimizer, _ = trained
    if not hasattr(getattr(optimizer, "state", None), "get"):
        return {"has_state": False}
    state, error = attempt(lambda: state_by_name(model, optimizer))
    if error is not None:
        return {"error": error}
    return {"has_state": True, "state": state}


def state_by_name(model: nn.Module, optimizer: Any) -> dict[str, dict[str, Any]]:
    """The optimizer's state per parameter name; parameters without state are left out."""
    out = {}
    for name, p in model.named_parameters():
        state = optimizer.state.get(p, {})
        if len(state):
            out[name] = {
                str(k): {"value": plain(v), "type": type(v).__name__} for k, v in state.items()
            }
    return out


def round_trip(
    cls: Any, kwargs: dict[str, Any], batches: Batches, stop: int, seed: int, resume_seed: int
) -> dict[str, Any]:
    """Train ``stop`` steps, save both state_dicts with ``torch.save``, load them into a new
    model (built with ``resume_seed``, then overwritten) and optimizer, and train both the
    original and the resumed one on the rest of ``batches``; the weights of both at the end.

    On an error: ``{"stage": ..., "error": ...}``, the stage saying which part raised.
    """
    loss_fn = nn.CrossEntropyLoss()

    def fit(model: nn.Module, opt: Any, part: Batches) -> None:
        for X, y in part:
            opt.zero_grad()
            loss_fn(model(X), y).backward()
            opt.step()

    model = make_model(seed)
    opt, error = attempt(lambda: cls(model.parameters(), **kwargs))
    if error is not None:
        return {"stage": "construct", "error": error}
    _, error = attempt(lambda: fit(model, opt, batches[:stop]))
    if error is not None:
        return {"stage": "train", "error": error}

    def save_and_load() -> Any:
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True)

    checkpoint, error = attempt(save_and_load)
    if error is not None:
        return {"stage": "save", "error": error}
    resumed = make_model(resume_seed)
    resumed.load_state_dict(checkpoint["model"])
    opt2, error = attempt(lambda: cls(resumed.parameters(), **kwargs))
    if error is not None:
        return {"stage": "construct", "error": error}
    _, error = attempt(lambda: opt2.load_state_dict(checkpoint["optimizer"]))
    if error is not None:
        return {"stage": "load_state_dict", "error": error}
    _, error = attempt(lambda: fit(model, opt, batches[stop:]))
    if error is not None:
        return {"stage": "train", "error": error}
    _, error = attempt(lambda: fit(resumed, opt2, batches[stop:]))
    if error is not None:
        return {"stage": "resumed", "error": error}
    return {"uninterrupted": snapshot(model), "resumed": snapshot(resumed)}


# --- train_resumed ---------------------------------------------------------------------------


class _Factory:
    """A model or optimizer factory that counts its calls."""

    def __init__(self, build: Callable[..., Any]) -> None:
        self.build = build
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.build(*args)


def _straight_losses(
    make_optimizer: Callable[..., Any],
    batches: Batches,
    seed: int,
    fresh_optimizer_at: int | None = None,
) -> list[float]:
    """The loss of every batch of an uninterrupted run (a fresh optimizer at one step)."""
    model = make_model(seed)
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


def _optimizer_factory(cls: Any, kwargs: dict[str, Any]) -> Callable[[Any], Any]:
    return lambda params: cls(params, **kwargs)


def resumed_training(
    train_resumed: Any,
    Adam: Any,
    AdamW: Any,
    setups: Sequence[dict[str, Any]],
    batches: Batches,
    stop: int,
    seed: int,
) -> dict[str, Any]:
    """For each setup, the student's optimizer's own uninterrupted losses and what
    ``train_resumed`` did with it; stops at the first setup whose code raised.

    A setup names the optimizer (``"Adam"`` or ``"AdamW"``) and its keywords; ``fresh_at``,
    if set, also asks for the losses of a run whose optimizer is replaced by a fresh one at
    that step; ``train_kwargs`` are passed on to ``train_resumed``.
    """
    classes = {"Adam": Adam, "AdamW": AdamW}
    found: list[dict[str, Any]] = []
    for setup in setups:
        make_optimizer = _optimizer_factory(classes[setup["optimizer"]], dict(setup["kwargs"]))
        outcome: dict[str, Any] = {}
        found.append(outcome)
        outcome["straight"], error = attempt(
            lambda make=make_optimizer: _straight_losses(make, batches, seed)
        )
        fresh_at = setup.get("fresh_at")
        if error is None and fresh_at is not None:
            outcome["fresh"], error = attempt(
                lambda make=make_optimizer, at=fresh_at: _straight_losses(make, batches, seed, at)
            )
        if error is not None:
            outcome["straight_error"] = error
            break
        train_kwargs = dict(setup.get("train_kwargs", {}))
        outcome.update(
            _run_resumed(train_resumed, make_optimizer, batches, stop, seed, train_kwargs)
        )
        if "train_error" in outcome:
            break
    return {"setups": found}


def _run_resumed(
    train_resumed: Any,
    make_optimizer: Callable[..., Any],
    batches: Batches,
    stop: int,
    seed: int,
    train_kwargs: dict[str, Any],
) -> dict[str, Any]:
    make_model_f = _Factory(lambda: make_model(seed))
    make_opt_f = _Factory(make_optimizer)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="course-resume-") as tmp:
        path = Path(tmp, "checkpoint.pt")
        losses, error = attempt(
            lambda: train_resumed(
                make_model_f, make_opt_f, list(batches), stop, path, **train_kwargs
            )
        )
        if error is not None:
            return {"train_error": error}
        out["wrote_file"] = path.is_file()
        if out["wrote_file"]:
            checkpoint, out["load_error"] = attempt(lambda: torch.load(path, weights_only=True))
            if out["load_error"] is None:
                out["checkpoint"] = _describe_checkpoint(checkpoint)
    floats, error = attempt(lambda: [float(x) for x in losses])
    out["losses"] = floats if error is None else None
    out["model_calls"], out["optimizer_calls"] = make_model_f.calls, make_opt_f.calls
    return out


def _describe_checkpoint(checkpoint: Any) -> dict[str, Any]:
    if not isinstance(checkpoint, dict):
        return {"complete": False, "keys": str(type(checkpoint))}
    try:
        keys = str(sorted(checkpoint))
    except TypeError:
        keys = str(sorted(checkpoint, key=repr))
    return {"complete": {"model", "optimizer"} <= set(checkpoint), "keys": keys}


# --- state_bytes -----------------------------------------------------------------------------


def state_bytes_calls(state_bytes: Any, calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``state_bytes(name, numel, dtype, **kwargs)`` for each call (the dtype given by its
    name, ``"float32"``); stops at the first call that raises."""
    outcomes = []
    for call in calls:
        dtype = getattr(torch, call["dtype"])
        outcome = _count(
            lambda call=call, dtype=dtype: state_bytes(
                call["name"], call["numel"], dtype, **call["kwargs"]
            )
        )
        outcomes.append(outcome)
        if "error" in outcome:
            break
    return outcomes


def _count(call: Callable[[], Any]) -> dict[str, Any]:
    got, error = attempt(call)
    if error is not None:
        return {"error": error}
    number = isinstance(got, (int, float))
    value: Any = None
    if isinstance(got, bool):
        value = bool(got)
    elif isinstance(got, int):
        value = int(got)
    elif isinstance(got, float):
        value = float(got)
    else:
        value = plain(got)
    text, _ = attempt(lambda: str(got)[:200])
    shown, _ = attempt(lambda: repr(got)[:200])
    return {"value": value, "number": number, "text": text, "repr": shown}


def _tensors_bytes(state: Any) -> int:
    """Bytes of the distinct tensors in ``state``'s values, looking into lists and dicts."""
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
    return sum(t.numel() * t.element_size() for t in seen.values())


def own_state_bytes(
    state_bytes: Any,
    Adam: Any,
    AdamW: Any,
    runs: Sequence[dict[str, Any]],
    batches: Batches,
    lr: float,
    frozen: Sequence[int],
) -> list[dict[str, Any]]:
    """For each run (optimizer, keywords, dtype): train the checks' model in that dtype with
    the student's optimizer, then for each parameter the bytes of tensors its state holds
    and what the student's ``state_bytes`` counts for it. Stops at the first error."""
    classes = {"Adam": Adam, "AdamW": AdamW}
    outcomes: list[dict[str, Any]] = []
    for run in runs:
        cls, kwargs = classes[run["optimizer"]], dict(run["kwargs"])
        dtype = getattr(torch, run["dtype"])
        model = make_model(0).to(dtype)
        for i in frozen:
            model[i].requires_grad_(False)

        def fit(
            cls: Any = cls, kwargs: dict = kwargs, model: nn.Module = model, dtype: Any = dtype
        ) -> Any:
            opt = cls(model.parameters(), lr=lr, **kwargs)
            for X, y in batches:
                opt.zero_grad()
                nn.functional.cross_entropy(model(X.to(dtype)), y).backward()
                opt.step()
            return opt

        opt, error = attempt(fit)
        if error is None:
            params, error = attempt(lambda opt=opt, model=model: _held(opt, model))
        if error is not None:
            outcomes.append({"error": error})
            break
        for param in params:
            if param["requires_grad"]:
                param["counted"] = _count(
                    lambda p=param, name=run["optimizer"], kwargs=kwargs, dtype=dtype: state_bytes(
                        name, p["numel"], dtype, **kwargs
                    )
                )
        outcomes.append({"params": params})
        if any("error" in p.get("counted", {}) for p in params):
            break
    return outcomes


def _held(opt: Any, model: nn.Module) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "numel": p.numel(),
            "requires_grad": p.requires_grad,
            "held": _tensors_bytes(opt.state.get(p, {})),
        }
        for name, p in model.named_parameters()
    ]
