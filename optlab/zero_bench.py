"""Optimizer-state memory and step time: plain replication, a ZeRO-1 file, torch's ZeRO.

:func:`compare_run` runs on every rank (through ``optlab.launch``) and trains one MLP with
AdamW three ways; :func:`comparison_rows` and :func:`format_rows` turn the per-rank results
into a table. ``benchmarks/zero1_memory_time.py`` is the command-line front end.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.functional import cross_entropy

from optlab.launch import load_module, rank_device
from optlab.models import mlp
from optlab.zero_runs import average_gradients, counting, rank_batch, state_bytes

__all__ = ["METHODS", "compare_run", "comparison_rows", "format_rows", "machine_label"]

METHODS = ("replicated (DDP-style)", "your ZeRO-1", "torch ZeroRedundancyOptimizer")


def compare_run(
    module_path: str | None,
    width: int = 1024,
    depth: int = 4,
    batch_size: int = 32,
    steps: int = 6,
    warmup: int = 2,
    lr: float = 1e-3,
) -> dict[str, dict[str, Any]]:
    """On every rank: AdamW three ways, with this rank's state bytes and sync+step times.

    The methods are plain replication (gradients averaged as DDP does, then every rank steps
    the full optimizer), the ZeRO-1 of ``module_path`` (skipped when it is ``None``) and
    ``torch.distributed.optim.ZeroRedundancyOptimizer``. The timed part is what differs between
    them: averaging the gradients plus the optimizer step (forward and backward are the same).
    """
    from torch.distributed.optim import ZeroRedundancyOptimizer

    rank = dist.get_rank()
    device = rank_device()
    sizes = (width,) * (depth + 1)
    zero1 = load_module(module_path) if module_path else None
    out: dict[str, dict[str, Any]] = {}
    replicated_params: list[torch.Tensor] = []
    for method in METHODS:
        if method == METHODS[1] and zero1 is None:
            continue
        model = mlp(sizes, seed=0, dtype=torch.float32).to(device)
        Counted = counting(torch.optim.AdamW)
        if method == METHODS[0]:
            optimizer = Counted(model.parameters(), lr=lr)
        elif method == METHODS[1]:
            optimizer = zero1.ZeroRedundancyOptimizer(model.parameters(), Counted, lr=lr)
        else:
            optimizer = ZeroRedundancyOptimizer(model.parameters(), Counted, lr=lr)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for step in range(warmup + steps):
            optimizer.zero_grad()
            X, y = rank_batch(step, rank, sizes, batch_size, dtype=torch.float32, device=device)
            cross_entropy(model(X), y).backward()
            _synchronize(device)
            dist.barrier()
            start = time.perf_counter()
            if method != METHODS[1]:
                average_gradients(model)
            optimizer.step()
            _synchronize(device)
            if step >= warmup:
                times.append(time.perf_counter() - start)
        params = [p.detach().float().cpu() for p in model.parameters()]
        if method == METHODS[0]:
            replicated_params = params
        out[method] = {
            "state_bytes": state_bytes(Counted.instances),
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "n_params": sum(p.numel() for p in model.parameters()),
            "step_s": statistics.median(times),
            "max_diff": max(
                float((a - b).abs().max()) for a, b in zip(params, replicated_params, strict=True)
            ),
            "peak_bytes": torch.cuda.max_memory_allocated(device)
            if device.type == "cuda"
            else None,
        }
        del optimizer, model
    return out


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def comparison_rows(results: Sequence[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per method from :func:`compare_run`'s per-rank results (worst rank shown)."""
    full = max(r[METHODS[0]]["state_bytes"] for r in results)
    rows = []
    for method in results[0]:
        per_rank = [r[method] for r in results]
        state = max(m["state_bytes"] for m in per_rank)
        peaks = [m["peak_bytes"] for m in per_rank if m["peak_bytes"] is not None]
        rows.append(
            {
                "method": method,
                "state_mb": state / 1e6,
                "share": state / full,
                "step_ms": 1e3 * max(m["step_s"] for m in per_rank),
                "max_diff": max(m["max_diff"] for m in per_rank),
                "peak_mb": max(peaks) / 1e6 if peaks else None,
            }
        )
    return rows


def format_rows(rows: Sequence[dict[str, Any]], label: str, n_params: int, world_size: int) -> str:
    """The comparison as a text table, titled with the machine it ran on."""
    lines = [
        f"{label}; {world_size} ranks; AdamW over {n_params / 1e6:.1f}M fp32 parameters",
        f"{'method':<32}{'state/rank MB':>14}{'share':>8}{'sync+step ms':>14}{'max |Δθ|':>11}"
        + ("  peak GPU MB" if rows and rows[0]["peak_mb"] is not None else ""),
    ]
    for row in rows:
        line = (
            f"{row['method']:<32}{row['state_mb']:>14.1f}{row['share']:>8.2f}"
            f"{row['step_ms']:>14.1f}{row['max_diff']:>11.1e}"
        )
        if row["peak_mb"] is not None:
            line += f"{row['peak_mb']:>13.0f}"
        lines.append(line)
    return "\n".join(lines)


def machine_label(device: str = "cpu") -> str:
    """Where the figures come from: processor, cores, GPU if used, torch version."""
    if device != "cpu" and torch.cuda.is_available():
        where = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        where = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    return f"{where}, torch {torch.__version__}"
