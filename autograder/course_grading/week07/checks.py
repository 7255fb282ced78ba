"""Trusted side: Week 7's hidden checks, by test cell.

Exercise ids (grade ids in the notebook start with them): ``model_state_memory`` and ``zero1``.
The ZeRO-1 answer is a module file; its test cells hand in the file's path. The producers run
``partition_parameters`` in the kernel and launch the module on several ranks (gloo over
127.0.0.1); every rank reports its parameters after every step, what its local optimizer holds
and rank 0's ``state_dict()``. Here they are compared, step by step, with one unsharded
optimizer trained on all ranks' batches in this process.

Week 7 switches off only ``torch.distributed.optim.ZeroRedundancyOptimizer``: the student's
ZeRO-1 wraps ``torch.optim``'s optimizers, which stay on.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from course_grading.core.checks import CheckFailed, Checks, Part, error_text
from course_grading.core.compare import ATOL, RTOL, first_difference
from course_grading.core.interface import judge_value_error
from course_grading.core.references import unguarded
from course_grading.week07.cases import (
    INVALID_MEMORY_CALLS,
    LAUNCH_TIMEOUT_S,
    MEMORY_CASE,
    MODEL_CASES,
    PARTITION_CASES,
    PARTITION_MODEL,
    STATE_DICT_CASE,
    STEP_CASES,
    expected_bytes,
    memory_cases,
    partition_numels,
    references,
    state_dict_layout,
)
from course_grading.week07.mistakes import MODEL_STATE_MEMORY_MISTAKES
from course_grading.week07.produce import RANKS
from course_grading.week07.produce_ranks import (
    ZeroCase,
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

HIDDEN_TORCH = {
    "torch.distributed.optim.zero_redundancy_optimizer": (
        "your ZeRO-1 must do the sharding itself (section 4's comparison with torch's "
        "ZeroRedundancyOptimizer runs only outside grading)."
    ),
}

DEMONSTRATIONS = {
    "w07-demo-run": "the four collectives on three ranks (about 1 s, and the first launch)",
    "w07-compare-run": "your ZeRO-1 against the plain optimizer on two ranks (about 1.7 s)",
}


def checks() -> Checks:
    """Every test cell's hidden check."""
    return {
        "model_state_memory_test_figure": [model_state_memory()],
        "model_state_memory_test_validation": [model_state_memory_validation()],
        "zero1_test_partition": [partition()],
        # Two ranks, different data on each, SGD, AdamW and a hand-written optimizer class.
        "zero1_test_step": [zero1_runs(2, STEP_CASES)],
        # Three ranks: tied weights, a frozen layer, uneven sizes, param groups.
        "zero1_test_models": [zero1_runs(3, MODEL_CASES)],
        # One rank and four ranks (more ranks than some layers have parameters).
        "zero1_test_world_sizes": [
            zero1_runs(1, [STEP_CASES[1]]),
            zero1_runs(4, [MODEL_CASES[0], STEP_CASES[0]]),
        ],
        "zero1_test_memory": [zero1_memory(4), zero1_memory(3)],
        "zero1_test_state_dict": [zero1_state_dict(3)],
    }


# --- model_state_memory ----------------------------------------------------------------------


def model_state_memory() -> Part:
    """Figure 1 and all of Table 1 of the ZeRO paper, and other values of K."""
    cases = memory_cases()
    return Part(
        "week07.produce:byte_counts",
        judge_model_state_memory,
        inputs={
            "calls": [{"args": [psi, nd, stage], "kwargs": {"k": k}} for psi, nd, stage, k in cases]
        },
        reference=lambda: [expected_bytes(case) for case in cases],
        context={"cases": cases},
    )


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(b), 1e-300)


def judge_model_state_memory(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`model_state_memory`."""
    for (psi, nd, stage, k), want, outcome in zip(
        part.context["cases"], part.expected, outcomes, strict=True
    ):
        call = f"model_state_bytes(n_params={psi:g}, n_devices={nd}, stage={stage}, k={k:g})"
        if outcome.get("error"):
            raise CheckFailed(f"{call} raised {error_text(outcome['error'])}")
        got = float(outcome["value"])
        if _close(got, want):
            continue
        mistake = next(
            (m for m in MODEL_STATE_MEMORY_MISTAKES if _close(got, m.rule(psi, nd, stage, k))),
            None,
        )
        hint = f" This looks like a typical mistake: {mistake.sentence}" if mistake else ""
        raise CheckFailed(
            f"{call} gave {got:.6g} bytes; the ZeRO paper's formula gives {want:.6g}.{hint}"
        )


def model_state_memory_validation() -> Part:
    """Invalid stage, device count or parameter count raise ValueError naming the argument."""
    return Part(
        "core.produce:calls",
        judge_model_state_memory_validation,
        inputs={"calls": [{"args": list(args)} for args, _ in INVALID_MEMORY_CALLS]},
    )


def judge_model_state_memory_validation(part: Part, outcomes: list[dict[str, Any]]) -> None:
    """See :func:`model_state_memory_validation`."""
    for (args, name), outcome in zip(INVALID_MEMORY_CALLS, outcomes, strict=True):
        call = f"model_state_bytes(n_params={args[0]:g}, n_devices={args[1]}, stage={args[2]})"
        judge_value_error(call, outcome.get("error"), (name,))


# --- zero1: the partition --------------------------------------------------------------------


def partition() -> Part:
    """Every parameter in exactly one shard, the shards balanced, the same answer every time."""
    cases = [
        {"sizes": sizes, "world_size": world_size}
        if sizes is not None
        else {"model": PARTITION_MODEL.to_dict(), "world_size": world_size}
        for sizes, world_size in PARTITION_CASES
    ]
    return Part("week07.produce:partitions", judge_partition, inputs={"cases": cases})


def _missing(found: dict[str, Any]) -> None:
    if "missing" in found:
        raise CheckFailed(
            f"there is no {found['missing']}: run the %%writefile cell that writes it."
        )


def judge_partition(part: Part, found: dict[str, Any]) -> None:
    """See :func:`partition`."""
    _missing(found)
    if "import_error" in found:
        raise CheckFailed(f"importing {found['file']} raised {error_text(found['import_error'])}")
    if found.get("no_function"):
        raise CheckFailed("your module has no function partition_parameters.")
    for (sizes, world_size), outcome in zip(PARTITION_CASES, found["cases"], strict=True):
        _judge_one_partition(partition_numels(sizes), world_size, outcome)


def _judge_one_partition(numels: list[int], world_size: int, outcome: dict[str, Any]) -> None:
    where = f"for parameters of sizes {numels} over {world_size} ranks"
    if outcome.get("error"):
        raise CheckFailed(f"partition_parameters raised {error_text(outcome['error'])} ({where}).")
    shards = outcome["shards"]
    if not shards["is_list"] or shards["length"] != world_size or shards["error"] is not None:
        raise CheckFailed(f"{where}, partition_parameters should return {world_size} lists.")
    positions = shards["positions"]
    count = [0] * len(numels)
    for shard in positions:
        for i in shard:
            if not isinstance(i, int) or not 0 <= i < len(numels):
                raise CheckFailed(
                    f"{where}, a shard holds a tensor that is not one of the given parameters: "
                    "put the parameters themselves in the shards, not copies."
                )
            count[i] += 1
    for i, numel in enumerate(numels):
        if count[i] == 0:
            raise CheckFailed(
                f"{where}, parameter #{i} (numel {numel}) is in no shard: every parameter "
                "must belong to exactly one rank."
            )
        if count[i] > 1:
            raise CheckFailed(
                f"{where}, parameter #{i} (numel {numel}) is in {count[i]} shards: "
                "the shards overlap, so several ranks would update it."
            )
    loads = [sum(numels[i] for i in shard) for shard in positions]
    if max(loads) - min(loads) > max(numels):
        raise CheckFailed(
            f"{where}, the shards hold {loads} elements: too uneven. Give each parameter, "
            "largest first, to the rank that holds the fewest elements so far."
        )
    again = outcome["again"]
    if not again["is_list"] or again["error"] is not None or again["positions"] != positions:
        raise CheckFailed(
            f"{where}, two calls gave different shards: every rank must compute the same "
            "partition, so it may depend only on the parameters and the world size."
        )


# --- zero1: runs on several processes --------------------------------------------------------


def zero1_runs(
    world_size: int, cases: Sequence[ZeroCase], timeout: float = LAUNCH_TIMEOUT_S
) -> Part:
    """On ``world_size`` ranks, every rank's parameters follow the unsharded run, every step."""
    cases = list(cases)
    return Part(
        "week07.produce:zero1_runs",
        judge_runs,
        inputs=_launch_inputs(world_size, cases, timeout),
        reference=lambda: references(cases, world_size),
        context={"cases": cases, "world_size": world_size},
    )


def _launch_inputs(
    world_size: int, cases: list[ZeroCase], timeout: float, layouts: list[Any] | None = None
) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "world_size": world_size,
        "cases": [case.to_dict() for case in cases],
        "timeout": timeout,
    }
    if layouts is not None:
        inputs["layouts"] = layouts
    return inputs


def judge_runs(part: Part, found: dict[str, Any]) -> None:
    """See :func:`zero1_runs`."""
    ranks = _ranks(part, found)
    for index, case in enumerate(part.context["cases"]):
        _compare_case(case, part.context["world_size"], ranks, part.expected[index], index)


def _ranks(part: Part, found: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every rank's runs (by case); fails with the launch's problem if it had one."""
    world_size = part.context["world_size"]
    where = f"with {world_size} rank{'s' if world_size > 1 else ''}"
    _missing(found)
    if "timeout" in found:
        text = str(found["timeout"]).replace(f"{RANKS}:run_cases", "the run")
        raise CheckFailed(f"{where}, {text}")
    if "submission" in found:
        raise CheckFailed(f"{where}, {_submission_error(part, found['submission'])}")
    if "failed" in found:
        failed = found["failed"]
        raise CheckFailed(f"{where}, rank {failed['rank']} failed: {failed['error']}")
    ranks = found["ranks"]
    if len(ranks) != world_size:
        raise ValueError("not one result per rank")
    return [rank["runs"] for rank in ranks]


def _submission_error(part: Part, report: dict[str, Any]) -> str:
    """What a rank reported of the submission's error, as the feedback words it."""
    if report["kind"] == "import":
        return f"importing your module failed:\n{report['traceback']}".rstrip()
    case: ZeroCase = part.context["cases"][report["case"]]
    if report["type"] == "SwitchedOff" and "ZeroRedundancyOptimizer" in str(report["message"]):
        return (
            f"[{case.name}] your ZeroRedundancyOptimizer uses "
            "torch.distributed.optim.ZeroRedundancyOptimizer: write the sharding yourself."
        )
    return (
        f"[{case.name}] on rank {report['rank']}, your code raised {report['type']}: "
        f"{report['message']}\n{report['traceback']}"
    ).rstrip()


def _at(snaps: list[dict], step: int) -> list[dict]:
    return [snaps[step]]


def _compare_case(
    case: ZeroCase,
    world_size: int,
    ranks: list[list[dict[str, Any]]],
    reference: dict[str, Any],
    index: int,
    until: int | None = None,
) -> None:
    """Fail with a message for the student unless every rank matches the unsharded run."""
    runs = [rank[index]["snapshots"] for rank in ranks]
    expected, summed = reference["snapshots"], reference["summed"]
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
        diff = first_difference(_at(runs[0], step), _at(expected, step))
        if diff is None:
            continue
        at = ", ".join(map(str, diff.index))
        message = (
            f"{where} after step {step}{after}, '{diff.param}'[{at}] is {diff.student:.10g} "
            f"with your ZeroRedundancyOptimizer but {diff.reference:.10g} with the unsharded "
            f"optimizer (difference {diff.abs_diff:.3g})."
        )
        if world_size > 1 and first_difference(runs[0], summed) is None:
            message += " " + SUMMED
        elif all(torch.equal(s[diff.param], runs[0][0][diff.param]) for s in runs[0]):
            message += " " + NEVER_CHANGED.format(name=diff.param)
        raise CheckFailed(message)


# --- zero1: memory ---------------------------------------------------------------------------


def zero1_memory(world_size: int) -> Part:
    """Each trainable parameter has state on exactly one rank; each rank holds ~1/N of it."""
    return Part(
        "week07.produce:zero1_runs",
        judge_memory,
        inputs=_launch_inputs(world_size, [MEMORY_CASE], LAUNCH_TIMEOUT_S),
        reference=lambda: references([MEMORY_CASE], world_size),
        context={"cases": [MEMORY_CASE], "world_size": world_size},
    )


def judge_memory(part: Part, found: dict[str, Any]) -> None:
    """See :func:`zero1_memory`."""
    ranks = _ranks(part, found)
    owners = [runs[0]["ownership"] for runs in ranks]
    trainable = [n for n, p in make_model(MEMORY_CASE).named_parameters() if p.requires_grad]
    problem = ownership_problem(owners, trainable, part.expected[0]["state_bytes"])
    if problem:
        raise CheckFailed(f"[{MEMORY_CASE.name}, {part.context['world_size']} ranks] {problem}")


# --- zero1: state_dict -----------------------------------------------------------------------


def zero1_state_dict(world_size: int) -> Part:
    """state_dict() on rank 0 is the unsharded state dict; loading it resumes the same run.

    The ranks resume only from a state dict that has the unsharded one's keys and shapes, so
    the inputs carry that layout, taken from the reference's run when the kit is built.
    """
    reference = functools.cache(lambda: references([STATE_DICT_CASE], world_size))

    def inputs() -> dict[str, Any]:
        layout = state_dict_layout(reference()[0]["state_dict"])
        return _launch_inputs(world_size, [STATE_DICT_CASE], LAUNCH_TIMEOUT_S, [layout])

    return Part(
        "week07.produce:zero1_runs",
        judge_state_dict,
        inputs=inputs,
        reference=reference,
        context={"cases": [STATE_DICT_CASE], "world_size": world_size},
    )


def judge_state_dict(part: Part, found: dict[str, Any]) -> None:
    """See :func:`zero1_state_dict`."""
    case, world_size = STATE_DICT_CASE, part.context["world_size"]
    ranks = _ranks(part, found)
    reference = part.expected[0]
    got = ranks[0][0]["state_dict"]
    # The state can only match if the steps before the checkpoint do.
    _compare_case(case, world_size, ranks, reference, 0, until=case.checkpoint_at)
    problem = state_dict_problem(got, reference["state_dict"], RTOL, ATOL)
    if problem:
        raise CheckFailed(f"[{case.name}, {world_size} ranks] {problem}")
    _check_loadable(got)
    _compare_case(case, world_size, ranks, reference, 0)


def _check_loadable(state_dict: dict) -> None:
    case = STATE_DICT_CASE
    model = make_model(case)
    optimizer = unguarded(optimizer_class(case.optimizer))(
        optimizer_params(model, case), **case.kwargs
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer.load_state_dict(state_dict)
    except Exception as exc:
        raise CheckFailed(
            "an unsharded torch.optim.AdamW could not load your state_dict(): "
            f"{type(exc).__name__}: {exc}"
        ) from None
