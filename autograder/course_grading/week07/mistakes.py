"""Trusted side: Week 7's catalogue of typical mistakes, named in the feedback.

``model_state_memory``: wrong versions of the ZeRO memory formula; each mistake's ``rule`` is
the wrong ``model_state_bytes(n_params, n_devices, stage, k=12)``. The ZeRO-1 mistakes are
named by the sentences of ``optlab.zero_runs`` (``NOT_SYNCED``, ``SUMMED``, ``NEVER_CHANGED``,
``ownership_problem``, ``state_dict_problem``), which the notebook's own quick checks share.
"""

from __future__ import annotations

from collections.abc import Callable

from course_grading.core.mistakes import Mistake
from course_grading.week07.cases import zero_bytes


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
