"""Timing and memory-bandwidth measurements for the mixed-precision week.

Everything here measures; nothing here is an exercise's answer. GPU work is asynchronous, so
every timer synchronizes the device before reading the clock.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "default_device",
    "describe_device",
    "synchronize",
    "time_callable",
    "copy_bandwidth",
    "gbps",
    "format_gbps",
    "parameter_set",
    "format_table",
]


def default_device() -> torch.device:
    """The GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: torch.device | str) -> str:
    """A short name for reports: the GPU's name, or the CPU with its core and thread counts."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine() or "CPU"
    return f"CPU {name} ({os.cpu_count()} cores, torch threads: {torch.get_num_threads()})"


def synchronize(device: torch.device | str) -> None:
    """Wait until the device has finished its queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(
    fn: Callable[[], object],
    device: torch.device | str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
) -> float:
    """Median wall-clock seconds of one ``fn()`` call, after ``warmup`` untimed calls.

    The device is synchronized before and after each timed call, so queued GPU work is counted
    in the call that queued it.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gbps(n_bytes: float, seconds: float) -> float:
    """Bandwidth in GB/s (10^9 bytes per second) of moving ``n_bytes`` in ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return n_bytes / seconds / 1e9


def format_gbps(value: float) -> str:
    """``value`` GB/s written for a table: ``'1,234 GB/s'`` or ``'12.3 GB/s'``."""
    return f"{value:,.0f} GB/s" if value >= 100 else f"{value:.1f} GB/s"


def copy_bandwidth(
    n_elements: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 10,
) -> float:
    """GB/s of ``dst.copy_(src)`` for two buffers of ``n_elements``: the read plus the write.

    A copy reads every byte once and writes it once, the least traffic any step over the same
    buffers can have; on a GPU it is the practical ceiling of a memory-bound kernel. On a CPU a
    write to memory that is not in cache first reads the line it overwrites, so an in-place
    update (which writes lines it has just read) can beat the copy.
    """
    src = torch.randn(n_elements, device=device).to(dtype)
    dst = torch.empty_like(src)
    seconds = time_callable(lambda: dst.copy_(src), device, warmup=2, repeats=repeats)
    return gbps(2 * src.numel() * src.element_size(), seconds)


def parameter_set(
    n_params: int,
    n_tensors: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[torch.Tensor]:
    """``n_tensors`` leaf tensors of about equal size, ``n_params`` elements in all, with grads.

    Stands in for a model's parameters when timing an optimizer step: each tensor requires a
    gradient and already has a random ``.grad``.
    """
    if not 0 < n_tensors <= n_params:
        raise ValueError(f"need 0 < n_tensors <= n_params, got {n_tensors} and {n_params}")
    gen = torch.Generator().manual_seed(seed)
    base, extra = divmod(n_params, n_tensors)
    tensors = []
    for i in range(n_tensors):
        size = base + (1 if i < extra else 0)
        p = (0.02 * torch.randn(size, generator=gen)).to(device=device, dtype=dtype)
        p.requires_grad_(True)
        p.grad = torch.randn(size, generator=gen).to(device=device, dtype=dtype)
        tensors.append(p)
    return tensors


def format_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table: one line per row, columns padded to their widest cell."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
