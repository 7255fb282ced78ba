"""Hidden checks for Week 7: the ZeRO memory formula and a ZeRO-1 sharded optimizer.

Exercise ids (grade ids in the notebook start with them): ``model_state_memory`` and ``zero1``.
The ZeRO-1 answer is a module file written by a ``%%writefile`` cell; the checks run it on
several processes with ``optlab.launch`` (gloo on CPU) and compare every rank's parameters,
step by step, with one unsharded optimizer trained on all ranks' batches
(``week07_workers`` holds the code the ranks run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import sys
import uuid
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from course_grading.compare import ATOL, RTOL, CheckFailed, first_difference
from course_grading.interface_checks import expect_value_error
from course_grading.mistakes import Mistake
from course_grading.week07_workers import (
    ZeroCase,
    case_dict,
    make_model,
    optimizer_class,
    optimizer_params,
)
from optlab.zero_runs import (
    NEVER_CHANGED,
    NOT_SYNCED,
    SUMMED,
    ownership_problem,
    state_dict_problem,
)

GRADING_ROOT = Path(__file__).resolve().parent.parent
# A correct answer needs a second or two per launch; a hanging one is stopped after this.
LAUNCH_TIMEOUT_S = 45


# --- model_state_memory ----------------------------------------------------------------------

# The ZeRO paper's Figure 1 (7.5B parameters, 64 devices, K = 12), in bytes, and the grid of
# its Table 1: model sizes x data-parallel degrees.
FIGURE_1 = {0: 120e9, 1: 31.40625e9, 2: 16.640625e9, 3: 1.875e9}
TABLE_1_SIZES = (7.5e9, 128e9, 1e12)
TABLE_1_DEVICES = (1, 4, 16, 64, 256, 1024)


def zero_bytes(n_params: float, n_devices: int, stage: int, k: float = 12) -> float:
    """Per-device bytes of model states (ZeRO paper, Section 5): the reference formula."""
    psi, nd = float(n_params), float(n_devices)
    return {
        0: (2 + 2 + k) * psi,
        1: 2 * psi + 2 * psi + k * psi / nd,
        2: 2 * psi + (2 + k) * psi / nd,
        3: (2 + 2 + k) * psi / nd,
    }[stage]


def _formula(**changes: Callable[[float, float, float], float]) -> Callable[..., float]:
    def wrong(n_params: float, n_devices: int, stage: int, k: float = 12) -> float:
        name = f"s{stage}"
        if name in changes:
            return changes[name](float(n_params), float(n_devices), float(k))
        if "all" in changes:
            return changes["all"](zero_bytes(n_params, n_devices, stage, k), n_devices, k)
        return zero_bytes(n_params, n_devices, stage, k)

    return wrong


MODEL_STATE_MEMORY_MISTAKES = (
    Mistake(
        "model_state_memory/fp32_weights",
        "parameters and gradients are counted at 4 bytes each; in mixed precision they are "
        "fp16, 2 bytes each (the fp32 copy is part of the K bytes of optimizer state).",
        _formula(
            s0=lambda p, n, k: (4 + 4 + k) * p,
            s1=lambda p, n, k: 8 * p + k * p / n,
            s2=lambda p, n, k: 4 * p + (4 + k) * p / n,
            s3=lambda p, n, k: (8 + k) * p / n,
        ),
    ),
    Mistake(
        "model_state_memory/stage1_shards_gradients",
        "stage 1 shards only the optimizer state; the gradients are sharded from stage 2 on.",
        _formula(s1=lambda p, n, k: 2 * p + (2 + k) * p / n),
    ),
    Mistake(
        "model_state_memory/stage2_keeps_optimizer_state",
        "stage 2 shards the gradients on top of stage 1: the optimizer state stays sharded.",
        _formula(s2=lambda p, n, k: 2 * p + 2 * p / n + k * p),
    ),
    Mistake(
        "model_state_memory/dp_divided",
        "plain data parallelism keeps a full copy of everything on every device: nothing is "
        "divided by the number of devices.",
        _formula(s0=lambda p, n, k: (4 + k) * p / n),
    ),
    Mistake(
        "model_state_memory/k_fixed",
        "K is fixed at 12: use the k argument (12 is mixed-precision Adam; other optimizers "
        "keep more or less state).",
        lambda n_params, n_devices, stage, k=12: zero_bytes(n_params, n_devices, stage, 12),
    ),
    Mistake(
        "model_state_memory/gigabytes",
        "the result is in GB; return bytes (the notebook converts to GB for display).",
        _formula(all=lambda v, n, k: v / 1e9),
    ),
)


def _memory_cases() -> list[tuple[float, int, int, float]]:
    cases = [(7.5e9, 64, stage, 12) for stage in range(4)]
    cases += [
        (psi, nd, stage, 12)
        for psi, nd, stage in itertools.product(TABLE_1_SIZES, TABLE_1_DEVICES, range(4))
    ]
    cases += [(3e6, 3, stage, k) for stage in range(4) for k in (4, 8, 16)]
    cases += [(1, 1, stage, 12) for stage in range(4)]
    return cases


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(b), 1e-300)


def check_model_state_memory(model_state_bytes: Callable[..., float]) -> None:
    """Figure 1 and all of Table 1 of the ZeRO paper, and other values of K."""
    __tracebackhide__ = True
    for psi, nd, stage, k in _memory_cases():
        try:
            got = float(model_state_bytes(psi, nd, stage, k=k))
        except Exception as exc:
            raise CheckFailed(
                f"model_state_bytes(n_params={psi:g}, n_devices={nd}, stage={stage}, k={k:g}) "
                f"raised {type(exc).__name__}: {exc}"
            ) from None
        want = zero_bytes(psi, nd, stage, k)
        if _close(got, want):
            continue
        message = (
            f"model_state_bytes(n_params={psi:g}, n_devices={nd}, stage={stage}, k={k:g}) "
            f"gave {got:.6g} bytes; the ZeRO paper's formula gives {want:.6g}."
        )
        for mistake in MODEL_STATE_MEMORY_MISTAKES:
            if _close(got, mistake.rule(psi, nd, stage, k)):
                message += f" This looks like a typical mistake: {mistake.sentence}"
                break
        raise CheckFailed(message)


def check_model_state_memory_validation(model_state_bytes: Callable[..., float]) -> None:
    """Invalid stage, device count or parameter count raise ValueError naming the argument."""
    __tracebackhide__ = True
    for args, name in (
        ((1e9, 8, 4), "stage"),
        ((1e9, 8, -1), "stage"),
        ((1e9, 0, 1), "n_devices"),
        ((-5.0, 8, 1), "n_params"),
    ):
        call = f"model_state_bytes(n_params={args[0]:g}, n_devices={args[1]}, stage={args[2]})"
        expect_value_error(call, partial(model_state_bytes, *args), (name,))


# --- zero1: the partition --------------------------------------------------------------------


def _load(path: str | Path) -> Any:
    """The submitted module, imported afresh under a private name."""
    __tracebackhide__ = True
    file = Path(path).resolve()
    if not file.is_file():
        raise CheckFailed(f"there is no {file.name}: run the %%writefile cell that writes it.")
    name = f"_zero1_under_test_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.loader.exec_module(module)
    except Exception as exc:
        raise CheckFailed(f"importing {file.name} raised {type(exc).__name__}: {exc}") from None
    finally:
        sys.modules.pop(name, None)
    return module


def check_partition(path: str | Path) -> None:
    """Every parameter in exactly one shard, the shards balanced, the same answer every time."""
    __tracebackhide__ = True
    module = _load(path)
    partition = getattr(module, "partition_parameters", None)
    if partition is None:
        raise CheckFailed("your module has no function partition_parameters.")
    model_params = list(make_model(ZeroCase("", "SGD", model="tied")).parameters())
    cases = [
        ([5, 3, 3, 1], 2),
        ([100, 1, 1, 1, 1, 1], 3),
        ([7, 7, 7, 7, 7], 4),
        ([4, 2], 4),
        ([6, 1, 9], 1),
        ([2, 3, 5, 7, 11, 13, 17, 19], 3),
        (model_params, 3),
    ]
    for sizes, world_size in cases:
        params = sizes if isinstance(sizes[0], torch.Tensor) else [torch.zeros(n) for n in sizes]
        _check_one_partition(partition, params, world_size)


def _check_one_partition(partition: Callable, params: list, world_size: int) -> None:
    __tracebackhide__ = True
    numels = [p.numel() for p in params]
    where = f"for parameters of sizes {numels} over {world_size} ranks"
    try:
        shards = partition(list(params), world_size)
        again = partition(list(params), world_size)
    except Exception as exc:
        raise CheckFailed(
            f"partition_parameters raised {type(exc).__name__}: {exc} ({where})."
        ) from None
    if not isinstance(shards, (list, tuple)) or len(shards) != world_size:
        raise CheckFailed(f"{where}, partition_parameters should return {world_size} lists.")
    count = {id(p): 0 for p in params}
    for shard in shards:
        for p in shard:
            if id(p) not in count:
                raise CheckFailed(
                    f"{where}, a shard holds a tensor that is not one of the given parameters: "
                    "put the parameters themselves in the shards, not copies."
                )
            count[id(p)] += 1
    for i, p in enumerate(params):
        if count[id(p)] == 0:
            raise CheckFailed(
                f"{where}, parameter #{i} (numel {p.numel()}) is in no shard: every parameter "
                "must belong to exactly one rank."
            )
        if count[id(p)] > 1:
            raise CheckFailed(
                f"{where}, parameter #{i} (numel {p.numel()}) is in {count[id(p)]} shards: "
                "the shards overlap, so several ranks would update it."
            )
    loads = [sum(p.numel() for p in shard) for shard in shards]
    if max(loads) - min(loads) > max(numels):
        raise CheckFailed(
            f"{where}, the shards hold {loads} elements: too uneven. Give each parameter, "
            "largest first, to the rank that holds the fewest elements so far."
        )
    if [[id(p) for p in s] for s in shards] != [[id(p) for p in s] for s in again]:
        raise CheckFailed(
            f"{where}, two calls gave different shards: every rank must compute the same "
            "partition, so it may depend only on the parameters and the world size."
        )


# --- zero1: runs on several processes --------------------------------------------------------


def _launch(path: str | Path, world_size: int, cases: Sequence[ZeroCase]) -> dict[str, Any]:
    """Run ``cases`` on ``world_size`` ranks; the reference runs and every rank's runs."""
    __tracebackhide__ = True
    from optlab.launch import LaunchError, LaunchTimeout, launch

    file = Path(path).resolve()
    if not file.is_file():
        raise CheckFailed(f"there is no {file.name}: run the %%writefile cell that writes it.")
    where = f"with {world_size} rank{'s' if world_size > 1 else ''}"
    try:
        results = launch(
            "course_grading.week07_workers",
            "run_cases",
            world_size,
            args=(str(file), [case_dict(c) for c in cases]),
            paths=[GRADING_ROOT],
            timeout=LAUNCH_TIMEOUT_S,
        )
    except LaunchTimeout as exc:
        text = str(exc).replace("course_grading.week07_workers:run_cases", "the run")
        raise CheckFailed(f"{where}, {text}") from None
    except LaunchError as exc:
        error = exc.error
        if error.startswith("SubmissionError: "):
            raise CheckFailed(f"{where}, {error.removeprefix('SubmissionError: ')}") from None
        raise CheckFailed(f"{where}, rank {exc.rank} failed: {error}") from None
    return {
        "reference": results[0]["reference"],
        "summed": results[0]["summed"],
        "ranks": [r["runs"] for r in results],
    }


def _at(snaps: list[dict], step: int) -> list[dict]:
    return [snaps[step]]


def _compare_case(
    case: ZeroCase, world_size: int, outcome: dict, index: int, until: int | None = None
) -> None:
    """Fail with a message for the student unless every rank matches the unsharded run."""
    __tracebackhide__ = True
    runs = [ranks[index]["snapshots"] for ranks in outcome["ranks"]]
    reference = outcome["reference"][index]["snapshots"]
    summed = outcome["summed"][index]["snapshots"]
    where = f"[{case.name}, {world_size} ranks]"
    resumed = f" (after resuming from state_dict() at step {case.checkpoint_at})"
    for step in range(1, (until or case.steps) + 1):
        after = resumed if case.checkpoint_at and step > case.checkpoint_at else ""
        for rank in range(1, world_size):
            diff = first_difference(_at(runs[rank], step), _at(runs[0], step))
            if diff is not None:
                raise CheckFailed(
                    f"{where} after step {step}{after}, the ranks disagree: '{diff.param}' is "
                    f"{diff.reference:.10g} on rank 0 but {diff.student:.10g} on rank {rank}. "
                    + NOT_SYNCED
                )
        diff = first_difference(_at(runs[0], step), _at(reference, step))
        if diff is None:
            continue
        index = ", ".join(map(str, diff.index))
        message = (
            f"{where} after step {step}{after}, '{diff.param}'[{index}] is {diff.student:.10g} "
            f"with your ZeroRedundancyOptimizer but {diff.reference:.10g} with the unsharded "
            f"optimizer (difference {diff.abs_diff:.3g})."
        )
        if world_size > 1 and first_difference(runs[0], summed) is None:
            message += " " + SUMMED
        elif all(torch.equal(s[diff.param], runs[0][0][diff.param]) for s in runs[0]):
            message += " " + NEVER_CHANGED.format(name=diff.param)
        raise CheckFailed(message)


def _check_runs(path: str | Path, world_size: int, cases: Sequence[ZeroCase]) -> dict:
    __tracebackhide__ = True
    outcome = _launch(path, world_size, cases)
    for i, case in enumerate(cases):
        _compare_case(case, world_size, outcome, i)
    return outcome


STEP_CASES = (
    ZeroCase("SGD with momentum", "SGD", {"lr": 0.05, "momentum": 0.9}, steps=12),
    ZeroCase("AdamW", "AdamW", {"lr": 0.01, "weight_decay": 0.1}, steps=12, seed=1),
    ZeroCase(
        "an optimizer class that is not in torch.optim",
        "SignMomentum",
        {"lr": 0.01, "beta": 0.8},
        steps=8,
        seed=2,
    ),
)
MODEL_CASES = (
    ZeroCase(
        "tied weights, a frozen layer and a 0-dimensional parameter",
        "Adam",
        {"lr": 0.02},
        model="tied",
        frozen=True,
        steps=10,
        seed=3,
    ),
    ZeroCase(
        "two param groups with their own settings",
        "SGD",
        {"lr": 0.05, "momentum": 0.5},
        groups={"lr": 0.2, "momentum": 0.9, "weight_decay": 0.01},
        steps=10,
        seed=4,
    ),
)


def check_zero1_step(path: str | Path) -> None:
    """Two ranks, different data on each, SGD, AdamW and a hand-written optimizer class."""
    __tracebackhide__ = True
    _check_runs(path, 2, STEP_CASES)


def check_zero1_models(path: str | Path) -> None:
    """Three ranks: tied weights, a frozen layer, uneven sizes, param groups."""
    __tracebackhide__ = True
    _check_runs(path, 3, MODEL_CASES)


def check_zero1_world_sizes(path: str | Path) -> None:
    """One rank and four ranks (more ranks than some layers have parameters)."""
    __tracebackhide__ = True
    _check_runs(path, 1, [STEP_CASES[1]])
    _check_runs(path, 4, [MODEL_CASES[0], STEP_CASES[0]])


MEMORY_CASE = ZeroCase(
    "Adam without weight decay",
    "Adam",
    {"lr": 0.01},
    model="tied",
    frozen=True,
    steps=3,
    seed=5,
)


def check_zero1_memory(path: str | Path) -> None:
    """Each trainable parameter has state on exactly one rank; each rank holds ~1/N of it."""
    __tracebackhide__ = True
    for world_size in (4, 3):
        outcome = _launch(path, world_size, [MEMORY_CASE])
        _check_ownership(world_size, outcome)


def _check_ownership(world_size: int, outcome: dict) -> None:
    __tracebackhide__ = True
    owners = [ranks[0]["ownership"] for ranks in outcome["ranks"]]
    trainable = [n for n, p in make_model(MEMORY_CASE).named_parameters() if p.requires_grad]
    problem = ownership_problem(owners, trainable, outcome["reference"][0]["state_bytes"])
    if problem:
        raise CheckFailed(f"[{MEMORY_CASE.name}, {world_size} ranks] {problem}")


STATE_DICT_CASE = ZeroCase(
    "AdamW with two param groups, checkpointed",
    "AdamW",
    {"lr": 0.01, "weight_decay": 0.05},
    model="tied",
    groups={"lr": 0.03, "weight_decay": 0.0},
    steps=9,
    seed=6,
    checkpoint_at=5,
)


def check_zero1_state_dict(path: str | Path) -> None:
    """state_dict() on rank 0 is the unsharded state dict; loading it resumes the same run."""
    __tracebackhide__ = True
    world_size = 3
    outcome = _launch(path, world_size, [STATE_DICT_CASE])
    got = outcome["ranks"][0][0]["state_dict"]
    want = outcome["reference"][0]["state_dict"]
    # The state can only match if the steps before the checkpoint do.
    _compare_case(STATE_DICT_CASE, world_size, outcome, 0, until=STATE_DICT_CASE.checkpoint_at)
    _compare_state_dicts(got, want, world_size)
    _check_loadable(got)
    _compare_case(STATE_DICT_CASE, world_size, outcome, 0)


def _compare_state_dicts(got: Any, want: dict, world_size: int) -> None:
    __tracebackhide__ = True
    problem = state_dict_problem(got, want, RTOL, ATOL)
    if problem:
        raise CheckFailed(f"[{STATE_DICT_CASE.name}, {world_size} ranks] {problem}")


def _check_loadable(state_dict: dict) -> None:
    __tracebackhide__ = True
    case = STATE_DICT_CASE
    model = make_model(case)
    optimizer = optimizer_class(case.optimizer)(optimizer_params(model, case), **case.kwargs)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(sys.stdout):
            warnings.simplefilter("ignore")
            optimizer.load_state_dict(state_dict)
    except Exception as exc:
        raise CheckFailed(
            "an unsharded torch.optim.AdamW could not load your state_dict(): "
            f"{type(exc).__name__}: {exc}"
        ) from None
