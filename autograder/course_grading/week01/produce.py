"""Student side: Week 1's producers (the shared ones are in ``core.produce``).

``optimizer_interface`` builds the student's ``Optimizer`` as the check's inputs say and
reports what it holds; ``epochs`` collects the batches of the student's ``minibatches``.
"""

from __future__ import annotations

from typing import Any

import torch

from course_grading.core.harness import attempt, plain
from course_grading.core.runs import make_model


def optimizer_interface(
    Optimizer: Any, constructions: list[dict[str, Any]], empty: dict[str, Any]
) -> dict[str, Any]:
    """Param groups after each construction, the empty-list error, and zero_grad's effect."""
    out: dict[str, Any] = {"constructions": []}
    for construction in constructions:
        seen = _construct_and_look(Optimizer, construction)
        out["constructions"].append(seen)
        if "error" in seen or not seen["groups_ok"]:
            return out
    _, out["empty_error"] = attempt(lambda: Optimizer([], dict(empty)))
    out["zero_grad"] = [_zero_grad(Optimizer, set_to_none) for set_to_none in (True, False)]
    return out


def _construct_and_look(Optimizer: Any, construction: dict[str, Any]) -> dict[str, Any]:
    model = make_model(construction["seed"])
    if construction["groups"] is None:
        given = [list(model.parameters())]
        params: Any = (p for p in given[0])
    else:
        given = [
            [p for i in g["layers"] for p in model[i].parameters()] for g in construction["groups"]
        ]
        params = [
            {"params": list(ps), **{k: v for k, v in g.items() if k != "layers"}}
            for g, ps in zip(construction["groups"], given, strict=True)
        ]
    opt, error = attempt(lambda: Optimizer(params, dict(construction["defaults"])))
    if error is not None:
        return {"error": error}
    groups = getattr(opt, "param_groups", None)
    seen: dict[str, Any] = {
        "is_list": isinstance(groups, list),
        "length": len(groups) if isinstance(groups, list) else None,
        "repr": _text(repr, groups),
        "has_state": hasattr(opt, "state"),
        "groups": [],
    }
    if not seen["is_list"] or seen["length"] != len(given):
        seen["groups_ok"] = False
        return seen
    for group, want in zip(groups, given, strict=True):
        entry: dict[str, Any] = {"is_dict": isinstance(group, dict)}
        if not entry["is_dict"]:
            entry["text"] = _text(str, group)
            seen["groups"].append(entry)
            continue
        keys = [k for k in group if isinstance(k, str)]
        entry["keys"] = sorted(keys)
        got = group.get("params")
        entry["same_params"] = (
            isinstance(got, list)
            and len(got) == len(want)
            and all(a is b for a, b in zip(got, want, strict=False))
        )
        entry["values"] = {k: plain(group[k]) for k in keys if k != "params"}
        entry["reprs"] = {k: _text(repr, group[k]) for k in keys if k != "params"}
        seen["groups"].append(entry)
    seen["groups_ok"] = True
    return seen


def _zero_grad(Optimizer: Any, set_to_none: bool) -> dict[str, Any]:
    model = make_model(1)
    model[0].weight.requires_grad_(False)
    opt, error = attempt(lambda: Optimizer(model.parameters(), {"lr": 0.1}))
    if error is not None:
        return {"construct_error": error}
    model(torch.ones(2, 64, dtype=torch.float64)).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}

    def zero() -> None:
        if set_to_none:
            opt.zero_grad()
        else:
            opt.zero_grad(set_to_none=False)

    _, error = attempt(zero)
    if error is not None:
        return {"error": error}
    params = []
    for name, p in model.named_parameters():
        params.append(
            {
                "name": name,
                "had_grad": grads[name] is not None,
                "grad_is_none": p.grad is None,
                "same_tensor": p.grad is grads[name],
                "all_zero": p.grad is not None and bool(p.grad.abs().max() == 0),
            }
        )
    return {"params": params}


def epochs(minibatches: Any, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each case, what one call of ``minibatches`` yields: a list of (X, y) pairs."""
    outcomes = []
    for case in cases:
        generator = torch.Generator().manual_seed(case["seed"])

        def collect(case: dict[str, Any] = case, generator: torch.Generator = generator) -> Any:
            batches = minibatches(
                case["X"].clone(), case["y"].clone(), case["batch_size"], generator
            )
            return [plain(item) for item in batches]

        got, error = attempt(collect)
        outcomes.append({"error": error} if error else {"batches": got})
    return outcomes


def _text(convert: Any, value: Any) -> str:
    text, error = attempt(lambda: convert(value))
    return text[:200] if error is None else f"<{error['type']}>"
