"""How close does an AdamW step come to the memory bandwidth of the device?

An AdamW step reads p, g, m, v and writes p, m, v: 28 bytes per fp32 parameter, and almost no
arithmetic per byte. Its speed is therefore set by memory traffic, and the fastest it can go is
about the speed of a plain device copy. This script times ``torch.optim.AdamW`` (Python loop,
``foreach``, ``fused``), an AdamW written on flat buffers, and ``fused`` on one flat buffer, for
a parameter set of a few large tensors and one of many small tensors, and prints one table:

    python benchmarks/optimizer_step_bandwidth.py                  # CPU: 4M parameters
    python benchmarks/optimizer_step_bandwidth.py --device cuda    # GPU: 50M parameters
    python benchmarks/optimizer_step_bandwidth.py --device cuda --params 50000000 \\
        --tensors 200 2000 --compile

GB/s counts the 28 bytes per parameter an ideal step moves (``effective`` traffic), so that every
variant is measured on the same scale; "% of copy" compares it with ``dst.copy_(src)`` on a
buffer of the same size.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # optlab, without installing

from optlab.bandwidth import (  # noqa: E402
    copy_bandwidth,
    describe_device,
    format_table,
    gbps,
    parameter_set,
    time_callable,
)

BYTES_PER_PARAM = 28  # read p, g, m, v and write p, m, v, 4 bytes each
HYPER = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}


class FlatState:
    """One parameter set copied into flat fp32 buffers: parameters, gradients, m and v."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.param = torch.cat([p.detach().reshape(-1) for p in params])
        self.grad = torch.cat([p.grad.reshape(-1) for p in params])
        self.exp_avg = torch.zeros_like(self.param)
        self.exp_avg_sq = torch.zeros_like(self.param)
        self.scratch = torch.empty_like(self.param)  # reused, so a step allocates nothing
        self.step = 0


def adamw_on_flat_buffers(state: FlatState) -> None:
    """One AdamW step on the flat buffers, with the arithmetic of ``torch.optim.AdamW``."""
    lr, (beta1, beta2) = HYPER["lr"], HYPER["betas"]
    state.step += 1
    state.param.mul_(1.0 - lr * HYPER["weight_decay"])
    state.exp_avg.lerp_(state.grad, 1.0 - beta1)
    state.exp_avg_sq.mul_(beta2).addcmul_(state.grad, state.grad, value=1.0 - beta2)
    denom = torch.sqrt(state.exp_avg_sq, out=state.scratch)
    denom.div_(math.sqrt(1.0 - beta2**state.step)).add_(HYPER["eps"])
    state.param.addcdiv_(state.exp_avg, denom, value=-lr / (1.0 - beta1**state.step))


def _compiled_step(state: FlatState) -> Callable[[], None]:
    """The same step as one compiled kernel; the step count enters as tensors, so that a new
    step does not recompile."""
    lr, (beta1, beta2) = HYPER["lr"], HYPER["betas"]
    eps, decay = HYPER["eps"], HYPER["weight_decay"]

    @torch.compile(fullgraph=True)
    def kernel(p, g, m, v, step_size, correction2):
        p.mul_(1.0 - lr * decay)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        p.sub_(step_size * m / (v.sqrt() / correction2 + eps))

    device = state.param.device

    def step() -> None:
        state.step += 1
        step_size = torch.tensor(lr / (1.0 - beta1**state.step), device=device)
        correction2 = torch.tensor(math.sqrt(1.0 - beta2**state.step), device=device)
        kernel(state.param, state.grad, state.exp_avg, state.exp_avg_sq, step_size, correction2)

    return step


def _torch_adamw(params: list[torch.Tensor], **flags: bool) -> Callable[[], None]:
    return torch.optim.AdamW(params, **HYPER, **flags).step


def variants(params: list[torch.Tensor], compile_flat: bool) -> dict[str, Callable[[], object]]:
    """Name -> a factory of the step to time (built lazily, so memory is freed in between)."""
    out = {
        "AdamW, Python loop (foreach=False)": lambda: _torch_adamw(params, foreach=False),
        "AdamW, foreach=True": lambda: _torch_adamw(params, foreach=True),
        "AdamW, fused=True": lambda: _torch_adamw(params, fused=True),
        "flat buffers, AdamW in torch ops": lambda: _bind(adamw_on_flat_buffers, FlatState(params)),
        "flat buffer, AdamW fused=True": lambda: _torch_adamw([_flat_leaf(params)], fused=True),
    }
    if compile_flat:
        out["flat buffers, torch.compile'd step"] = lambda: _compiled_step(FlatState(params))
    return out


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f}%" if fraction >= 0.1 else f"{100 * fraction:.1f}%"


def _bind(fn: Callable[[FlatState], None], state: FlatState) -> Callable[[], None]:
    return lambda: fn(state)


def _flat_leaf(params: list[torch.Tensor]) -> torch.Tensor:
    leaf = torch.cat([p.detach().reshape(-1) for p in params]).requires_grad_(True)
    leaf.grad = torch.cat([p.grad.reshape(-1) for p in params])
    return leaf


def run(
    device: torch.device,
    n_params: int,
    tensor_counts: list[int],
    repeats: int,
    compile_flat: bool,
) -> list[list[str]]:
    """Time every variant on every parameter set; one table row per measurement."""
    name = describe_device(device)
    copy = copy_bandwidth(n_params, device, repeats=repeats)
    rows = [
        [name, f"{n_params:,}", "-", "device copy (dst.copy_(src))", "-", f"{copy:,.1f}", "100%"]
    ]
    for n_tensors in tensor_counts:
        params = parameter_set(n_params, n_tensors, device)
        for label, make in variants(params, compile_flat).items():
            try:
                step = make()
                seconds = time_callable(step, device, warmup=3, repeats=repeats)
            except (RuntimeError, NotImplementedError) as exc:  # e.g. fused on an old CPU build
                reason = str(exc).splitlines()[0][:60]
                rows.append(
                    [name, f"{n_params:,}", str(n_tensors), label, "unsupported", reason, "-"]
                )
                continue
            rate = gbps(BYTES_PER_PARAM * n_params, seconds)
            rows.append(
                [
                    name,
                    f"{n_params:,}",
                    str(n_tensors),
                    label,
                    f"{seconds * 1e3:.2f}",
                    f"{rate:,.1f}",
                    _percent(rate / copy),
                ]
            )
            del step
        del params
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the benchmark, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument(
        "--params",
        type=int,
        default=None,
        help="parameters in all (default: 4,000,000 on CPU, 50,000,000 on GPU)",
    )
    parser.add_argument(
        "--tensors",
        type=int,
        nargs="+",
        default=None,
        help="tensor counts to split them into (default: 20 2000 on CPU, 200 2000 on GPU)",
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile'd flat step")
    args = parser.parse_args(argv)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = device.type == "cuda"
    n_params = args.params or (50_000_000 if on_gpu else 4_000_000)
    tensors = args.tensors or ([200, 2000] if on_gpu else [20, 2000])

    rows = run(device, n_params, tensors, args.repeats, args.compile)
    header = ["device", "n params", "n tensors", "variant", "ms/step", "GB/s", "% of copy"]
    print(format_table(rows, header))
    print(
        f"\nGB/s: {BYTES_PER_PARAM} bytes per parameter per step (read p, g, m, v; write p, m, v)"
        " divided by the step time; torch",
        torch.__version__,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
