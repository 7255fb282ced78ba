"""Week 7's ZeRO-1 training under ``torchrun``, the launcher of real multi-GPU and multi-node jobs.

    torchrun --nproc-per-node 2 -m optlab.zero_train --zero1 zero1.py [--steps N]
        [--optimizer SGD] [--options '{"lr": 0.1, "momentum": 0.9}'] [--seed S]
        [--device auto|cpu|cuda] [--save FILE]

Every rank trains the model of the notebook's ZeRO-1 checks (the float64 MLP of
:data:`optlab.zero_runs.CHECK_SIZES`) with the ``ZeroRedundancyOptimizer`` of the module file
``--zero1`` (the file the notebook's ``%%writefile`` cell writes). It is the training that
``launch("optlab.zero_runs", "check_run", ...)`` runs in the notebook, in the same function,
:func:`optlab.zero_runs.train_zero1`; the defaults are the notebook's first check (SGD, lr 0.1,
momentum 0.9, 5 steps). Rank 0 prints the final loss and a checksum of the parameters, which
:func:`final_loss` and :func:`checksum` compute from the notebook's results too; ``--save``
writes rank 0's parameters and losses with ``torch.save``.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, which the process group
reads (``env://``). On CPU the ranks use gloo; on GPUs (``--device cuda``, or ``auto`` where one
is visible) each rank takes the GPU of its LOCAL_RANK, with NCCL: start one process per GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from optlab.launch import load_module
from optlab.zero_runs import train_zero1

__all__ = ["checksum", "final_loss", "main"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def checksum(params: Mapping[str, torch.Tensor]) -> str:
    """The parameters' sum and a SHA-256 of their bytes: equal only for equal parameters."""
    digest = hashlib.sha256()
    total = 0.0
    for name in sorted(params):
        value = params[name].detach().cpu().double().contiguous()
        digest.update(name.encode() + value.numpy().tobytes())
        total += float(value.sum())
    return f"sum {total!r}, sha256 {digest.hexdigest()[:16]}"


def final_loss(last_losses: Sequence[float]) -> float:
    """The loss of the last step, averaged over the ranks (each trains on its own batch)."""
    return sum(last_losses) / len(last_losses)


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise SystemExit(
            f"local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible): "
            "NCCL needs one GPU per rank, so start at most that many processes per node."
        )
    return torch.device("cuda", local_rank)


def main(argv: list[str] | None = None) -> int:
    """Train on this rank; rank 0 prints the configuration, the final loss and the checksum."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zero1", type=Path, required=True, help="the ZeRO-1 module file")
    parser.add_argument("--optimizer", default="SGD", help="a torch.optim class (default SGD)")
    parser.add_argument("--options", default='{"lr": 0.1, "momentum": 0.9}', type=json.loads)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--save", type=Path, help="rank 0 saves parameters and losses here")
    args = parser.parse_args(argv)
    if missing := [name for name in TORCHRUN_VARIABLES if name not in os.environ]:
        parser.error(f"{', '.join(missing)} not set: start it with torchrun (see --help)")
    if not args.zero1.is_file():
        parser.error(f"no module file {args.zero1}")

    device = _device(args.device, int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        zero1 = load_module(args.zero1)
        optimizer_class = getattr(torch.optim, args.optimizer)
        model, _, losses = train_zero1(
            zero1, optimizer_class, args.options, args.steps, args.seed, device
        )
        last = [0.0] * dist.get_world_size()
        dist.all_gather_object(last, losses[-1])
        if dist.get_rank() == 0:
            params = {name: p.detach().cpu() for name, p in model.named_parameters()}
            print(
                f"{args.zero1.name}, {args.optimizer} {json.dumps(args.options)}, {args.steps} "
                f"steps: {dist.get_world_size()} ranks, backend {dist.get_backend()}, {device.type}"
            )
            print(f"final loss {final_loss(last)!r} (last step, mean over the ranks)")
            print(f"parameters: {checksum(params)}")
            if args.save is not None:
                torch.save({"params": params, "last_losses": last}, args.save)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's teardown. Gloo's worker threads release the tensors of
    # the last collective a moment after it completes, and doing so needs the GIL; a thread
    # that asks for it while the interpreter finalizes is ended mid-destructor, and the C++
    # runtime aborts the rank (SIGABRT, "terminate called without an active exception") after
    # all its work is done. The notebook's ranks leave the same way (multiprocessing's children).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
