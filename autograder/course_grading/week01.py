"""Hidden checks for Week 1: the optimizer interface, SGD, the stable step size, mini-batches.

Exercise ids (grade ids in the notebook start with them): ``optimizer_interface``,
``sgd_step``, ``max_stable_lr``, ``minibatches``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.utils.data import BatchSampler, RandomSampler

from course_grading.compare import CheckFailed
from course_grading.interface_checks import (
    check_closure,
    check_signature,
    check_value_errors,
    expect_value_error,
)
from course_grading.mistakes import Mistake
from course_grading.optimizer_checks import check_against_torch
from course_grading.runs import Case, make_model

# torch.optim.SGD's keywords and defaults, which the SGD of Weeks 1 and 2 keeps.
SGD_DEFAULTS = {
    "lr": 1e-3,
    "momentum": 0,
    "dampening": 0,
    "weight_decay": 0,
    "nesterov": False,
    "maximize": False,
}


# --- optimizer_interface ---------------------------------------------------------------------


def check_optimizer_interface(Optimizer: Any) -> None:
    """Param groups built like torch.optim.Optimizer's, and zero_grad in both modes."""
    __tracebackhide__ = True
    model = make_model(0)
    params = list(model.parameters())

    opt = _construct(Optimizer, (p for p in params), {"lr": 0.5, "weight_decay": 0.0})
    _expect_groups(opt, [{"params": params, "lr": 0.5, "weight_decay": 0.0}], "a generator")
    if not hasattr(opt, "state"):
        raise CheckFailed("your Optimizer has no `state` attribute (a dict, per parameter).")

    groups = [
        {"params": list(model[0].parameters()), "lr": 0.1},
        {"params": list(model[2].parameters())},
    ]
    opt = _construct(Optimizer, groups, {"lr": 0.5, "weight_decay": 0.25})
    _expect_groups(
        opt,
        [
            {"params": groups[0]["params"], "lr": 0.1, "weight_decay": 0.25},
            {"params": groups[1]["params"], "lr": 0.5, "weight_decay": 0.25},
        ],
        "a list of param-group dicts",
    )

    expect_value_error("an empty parameter list", partial(Optimizer, [], {"lr": 0.1}))

    _check_zero_grad(Optimizer)


def _construct(Optimizer: Any, params: Any, defaults: dict) -> Any:
    __tracebackhide__ = True
    try:
        return Optimizer(params, defaults)
    except Exception as exc:
        raise CheckFailed(
            f"Optimizer(params, defaults) raised {type(exc).__name__}: {exc}"
        ) from None


def _expect_groups(opt: Any, expected: list[dict], given: str) -> None:
    __tracebackhide__ = True
    groups = getattr(opt, "param_groups", None)
    if not isinstance(groups, list) or len(groups) != len(expected):
        raise CheckFailed(
            f"given {given}, param_groups should be a list of {len(expected)} dict(s); "
            f"got {groups!r:.200}."
        )
    for i, (group, want) in enumerate(zip(groups, expected, strict=True)):
        if not isinstance(group, dict) or set(group) != set(want):
            keys = sorted(group) if isinstance(group, dict) else group
            raise CheckFailed(
                f"given {given}, param group {i} should have the keys {sorted(want)}; got {keys}."
            )
        got_params = group["params"]
        if (
            not isinstance(got_params, list)
            or len(got_params) != len(want["params"])
            or any(a is not b for a, b in zip(got_params, want["params"], strict=False))
        ):
            raise CheckFailed(
                f"given {given}, param group {i}['params'] should be a list of the very same "
                "tensors, in order (not copies)."
            )
        for key, value in want.items():
            if key != "params" and group[key] != value:
                raise CheckFailed(
                    f"given {given}, param group {i}['{key}'] should be {value!r} "
                    f"but is {group[key]!r} (a group's own value wins over the defaults)."
                )


def _check_zero_grad(Optimizer: Any) -> None:
    __tracebackhide__ = True
    for set_to_none in (True, False):
        model = make_model(1)
        frozen = model[0].weight
        frozen.requires_grad_(False)
        opt = _construct(Optimizer, model.parameters(), {"lr": 0.1})
        model(torch.ones(2, 64, dtype=torch.float64)).sum().backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        try:
            opt.zero_grad(set_to_none=set_to_none) if not set_to_none else opt.zero_grad()
        except Exception as exc:
            raise CheckFailed(f"zero_grad raised {type(exc).__name__}: {exc}") from None
        for name, p in model.named_parameters():
            if grads[name] is None:
                if p.grad is not None:
                    raise CheckFailed(f"zero_grad gave '{name}', which had no gradient, one.")
            elif set_to_none and p.grad is not None:
                raise CheckFailed(
                    f"zero_grad() should set every .grad to None by default; '{name}'.grad "
                    "is still a tensor."
                )
            elif not set_to_none and (p.grad is not grads[name] or p.grad.abs().max() != 0):
                raise CheckFailed(
                    f"zero_grad(set_to_none=False) should fill '{name}'.grad with zeros in "
                    "place (the same tensor, now all zeros)."
                )


# --- sgd_step --------------------------------------------------------------------------------


def _sgd_rule(
    decay_after: bool = False,
    lr_twice: bool = False,
    decay_without_lr: bool = False,
    decay_sign: float = 1.0,
    ignore_maximize: bool = False,
    negate_after_decay: bool = False,
) -> Callable:
    def rule(p: torch.Tensor, g: torch.Tensor, _state: dict, group: dict) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        maximize = group["maximize"] and not ignore_maximize
        d = -g if maximize and not negate_after_decay else g
        if decay_after or decay_without_lr:
            decay = -wd * (lr if decay_after else 1.0)
            p.add_(d, alpha=-lr)
            p.add_(p if decay_after else p.detach().clone(), alpha=decay)
            return
        d = d + decay_sign * wd * p
        if maximize and negate_after_decay:
            d = -d
        p.add_(d, alpha=-(lr * lr if lr_twice else lr))

    return rule


SGD_STEP_MISTAKES = (
    Mistake(
        "sgd_step/decay_after_step",
        "weight decay is applied after the gradient step, to the already updated weights; "
        "add weight_decay * p to the gradient first, then take one step.",
        _sgd_rule(decay_after=True),
    ),
    Mistake(
        "sgd_step/lr_twice",
        "the learning rate is applied twice (the step is lr * lr * gradient).",
        _sgd_rule(lr_twice=True),
    ),
    Mistake(
        "sgd_step/decay_without_lr",
        "the weight-decay term is not multiplied by the learning rate.",
        _sgd_rule(decay_without_lr=True),
    ),
    Mistake(
        "sgd_step/decay_sign",
        "weight decay has the wrong sign: it pushes weights away from zero.",
        _sgd_rule(decay_sign=-1.0),
    ),
    Mistake(
        "sgd_step/maximize_ignored",
        "maximize=True is ignored: the step still goes downhill.",
        _sgd_rule(ignore_maximize=True),
    ),
    Mistake(
        "sgd_step/maximize_negates_decay",
        "with maximize=True the weight-decay term is negated too; torch negates only the "
        "gradient, so decay still pulls weights towards zero.",
        _sgd_rule(negate_after_decay=True),
    ),
)


def _check_sgd(SGD: Any, cases: list[Case]) -> None:
    __tracebackhide__ = True
    check_against_torch(SGD, "SGD", "torch.optim.SGD", cases, SGD_STEP_MISTAKES, SGD_DEFAULTS)


def check_sgd_step_basic(SGD: Any) -> None:
    """Plain SGD over many steps, with the default and with a large learning rate."""
    __tracebackhide__ = True
    # The constructor keywords Week 1 asks for, with torch.optim.SGD's defaults.
    defaults = {name: SGD_DEFAULTS[name] for name in ("lr", "weight_decay", "maximize")}
    check_signature(SGD, "SGD", defaults, "torch.optim.SGD")
    _check_sgd(SGD, [Case("default arguments"), Case("a large learning rate", {"lr": 0.3})])


def check_sgd_weight_decay(SGD: Any) -> None:
    """Weight decay, and maximize with and without it."""
    __tracebackhide__ = True
    _check_sgd(
        SGD,
        [
            Case("weight decay", {"lr": 0.1, "weight_decay": 0.05}),
            Case("maximize", {"lr": 0.02, "maximize": True}),
            Case("maximize with weight decay", {"lr": 0.02, "weight_decay": 0.1, "maximize": True}),
        ],
    )


def check_sgd_groups_frozen(SGD: Any) -> None:
    """Frozen parameters, param groups with their own settings, and step(closure)."""
    __tracebackhide__ = True
    _check_sgd(
        SGD,
        [
            Case("a frozen first layer", {"lr": 0.1, "weight_decay": 0.01}, frozen=(0,)),
            Case(
                "param groups with their own lr and weight decay",
                {"lr": 0.05},
                groups=({"layers": (0,), "lr": 0.2}, {"layers": (2, 4), "weight_decay": 0.1}),
            ),
        ],
    )
    # lr 0.1 on the gradient [2, -4] of (p**2).sum() at p = [1, -2]
    check_closure(SGD, "SGD", {"lr": 0.1}, expected=(0.8, -1.6))


def check_sgd_validation(SGD: Any) -> None:
    """Invalid hyperparameters raise ValueError naming the parameter; valid edge values don't."""
    __tracebackhide__ = True
    check_value_errors(
        SGD,
        "SGD",
        invalid=[
            ({"lr": -0.01}, ("lr", "learning rate")),
            ({"lr": 0.1, "weight_decay": -1e-4}, ("weight_decay", "weight decay")),
        ],
        valid=[{"lr": 0.0}, {"lr": 0.1, "weight_decay": 0.0}],
    )


# --- max_stable_lr ---------------------------------------------------------------------------


def check_max_stable_lr(max_stable_lr: Callable[[torch.Tensor], float]) -> None:
    """2 / largest eigenvalue, for several symmetric positive definite matrices."""
    __tracebackhide__ = True
    g = torch.Generator().manual_seed(7)
    for n in (2, 3, 5, 8):
        a = torch.randn(n, n, generator=g, dtype=torch.float64)
        hessian = a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64)
        eig = torch.linalg.eigvalsh(hessian)
        expected = 2.0 / float(eig.max())
        try:
            got = float(max_stable_lr(hessian.clone()))
        except Exception as exc:
            raise CheckFailed(
                f"max_stable_lr raised {type(exc).__name__}: {exc} for a {n}x{n} Hessian."
            ) from None
        if abs(got - expected) <= 1e-9 * expected:
            continue
        message = f"for a {n}x{n} Hessian, max_stable_lr gave {got:.6g}; expected {expected:.6g}."
        hints = {
            1.0 / float(eig.max()): "that is 1/λmax: the threshold is twice that.",
            2.0 / float(eig.min()): "that uses the smallest eigenvalue; the largest one limits lr.",
            2.0 / float(hessian.diagonal().max()): "that uses the largest diagonal entry, not the "
            "largest eigenvalue.",
        }
        for value, hint in hints.items():
            if abs(got - value) <= 1e-9 * abs(value):
                message += f" This looks like a typical mistake: {hint}"
        raise CheckFailed(message)


# --- minibatches -----------------------------------------------------------------------------


def check_minibatches(minibatches: Callable[..., Any]) -> None:
    """Same batches, in the same order, as torch's RandomSampler + BatchSampler."""
    __tracebackhide__ = True
    for n, batch_size, seed in ((100, 32, 0), (64, 16, 3), (10, 32, 5), (33, 1, 2)):
        X = torch.arange(n * 3, dtype=torch.float64).reshape(n, 3)
        y = torch.arange(n) * 10
        try:
            got = list(minibatches(X, y, batch_size, torch.Generator().manual_seed(seed)))
        except Exception as exc:
            raise CheckFailed(f"minibatches raised {type(exc).__name__}: {exc}") from None
        sampler = RandomSampler(range(n), generator=torch.Generator().manual_seed(seed))
        want = list(BatchSampler(sampler, batch_size, drop_last=False))
        _compare_batches(got, want, X, y, n, batch_size)


def _compare_batches(
    got: list, want: list, X: torch.Tensor, y: torch.Tensor, n: int, batch_size: int
) -> None:
    __tracebackhide__ = True
    where = f"with {n} samples and batch_size={batch_size}"
    try:
        rows = [(xb, yb) for xb, yb in got]
    except (TypeError, ValueError):
        raise CheckFailed(f"{where}, each batch should be a pair (X_batch, y_batch).") from None
    seen = []
    for xb, yb in rows:
        if not isinstance(xb, torch.Tensor) or not isinstance(yb, torch.Tensor):
            raise CheckFailed(f"{where}, batches should hold tensors.")
        if len(xb) != len(yb) or not torch.equal(xb[:, 0].long() // 3 * 10, yb):
            raise CheckFailed(f"{where}, the features and labels of a batch no longer match.")
        seen.extend((xb[:, 0].long() // 3).tolist())
    sizes = [len(xb) for xb, _ in rows]
    want_sizes = [len(b) for b in want]
    if sorted(seen) != list(range(n)):
        if len(seen) < n and sizes == want_sizes[:-1]:
            raise CheckFailed(f"{where}, the last, smaller batch is missing: keep it.")
        raise CheckFailed(
            f"{where}, an epoch should contain every sample exactly once; {len(seen)} samples "
            f"were returned, {len(set(seen))} of them different."
        )
    if sizes != want_sizes:
        raise CheckFailed(f"{where}, batch sizes should be {want_sizes}, got {sizes}.")
    order = [i for b in want for i in b]
    if seen != order:
        hint = (
            " The batches come in the data's original order: shuffle them."
            if seen == list(range(n))
            else " Draw the order with torch.randperm(len(X), generator=generator)."
        )
        raise CheckFailed(
            f"{where}, the samples come in a different order than torch's RandomSampler with "
            f"the same generator.{hint}"
        )
