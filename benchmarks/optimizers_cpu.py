"""Time the course's solution optimizers against torch.optim on the CPU.

    python benchmarks/optimizers_cpu.py [--width 512] [--depth 4] [--steps 100]

Each optimizer steps an MLP's parameters with fixed random gradients; the table gives
milliseconds per step (median of 5 repeats) for the course's solution (a Python loop over
parameters, as students write it), torch.optim with foreach=False and with foreach=True.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from solution_code import load_answers
from torch import nn

# (label, week whose solution defines it, class name, constructor arguments)
OPTIMIZERS = [
    ("SGD", "week01_sgd", "SGD", {"lr": 0.01, "weight_decay": 1e-4}),
    ("SGD momentum", "week02_momentum", "SGD", {"lr": 0.01, "momentum": 0.9}),
    ("RMSprop", "week03_rmsprop", "RMSprop", {"lr": 0.01}),
    ("Adam", "week04_adam", "Adam", {"lr": 1e-3}),
    ("AdamW", "week04_adam", "AdamW", {"lr": 1e-3}),
]


def model_params(width: int, depth: int) -> list[torch.Tensor]:
    """The parameters of ``depth`` square linear layers, with fixed random gradients."""
    torch.manual_seed(0)
    layers = [nn.Linear(width, width) for _ in range(depth)]
    params = [p for layer in layers for p in layer.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


def time_steps(cls: Callable[..., torch.optim.Optimizer], kwargs: dict, params, steps: int):
    """Median milliseconds per ``cls(params, **kwargs).step()``."""
    optimizer = cls(params, **kwargs)
    optimizer.step()  # warm-up, creates the state
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        runs.append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(runs)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    params = model_params(args.width, args.depth)
    n = sum(p.numel() for p in params)
    print(f"{n / 1e6:.2f}M parameters in {len(params)} tensors, {torch.get_num_threads()} threads")
    print(f"{'optimizer':14} {'course (ms)':>12} {'torch loop':>12} {'torch foreach':>14}")
    for label, week, name, kwargs in OPTIMIZERS:
        try:
            course_cls = getattr(load_answers(week), name)
        except (FileNotFoundError, ValueError, AttributeError) as exc:
            print(f"{label:14} (solution not available: {exc})")
            continue
        torch_cls = getattr(torch.optim, name)
        fresh = [p.detach().clone() for p in params]
        for p, q in zip(fresh, params, strict=True):
            p.grad = q.grad.clone()
        row = [
            time_steps(course_cls, kwargs, fresh, args.steps),
            time_steps(torch_cls, {**kwargs, "foreach": False}, fresh, args.steps),
            time_steps(torch_cls, {**kwargs, "foreach": True}, fresh, args.steps),
        ]
        print(f"{label:14} {row[0]:12.2f} {row[1]:12.2f} {row[2]:14.2f}")


if __name__ == "__main__":
    main()
