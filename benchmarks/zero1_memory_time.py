"""Per-rank optimizer-state memory and step time: replication, a ZeRO-1 file, torch's ZeRO.

    python benchmarks/zero1_memory_time.py [--zero1 PATH/zero1.py] [--device cpu|cuda|auto]
        [--world-size N] [--width W] [--depth D] [--batch B] [--steps S]

Trains an MLP of ``depth`` square ``width`` x ``width`` layers with AdamW on ``world_size``
processes, three ways: plain replication (gradients averaged as DDP does, a full AdamW on every
rank), the ``ZeroRedundancyOptimizer`` of the module file given with ``--zero1`` (the one the
Week 7 notebook writes; by default the course's solution), and ``torch.distributed.optim``'s.
It prints, per method, the optimizer state on the worst rank, its share of the replicated
state, the median time of averaging the gradients plus the optimizer step, the largest
difference of the final parameters from the replicated run, and on GPUs the peak memory
allocated.

On GPUs (``--device cuda``) each rank gets its own GPU and NCCL when there are enough GPUs,
otherwise the ranks share the GPUs over gloo. Example on one GPU machine:

    python benchmarks/zero1_memory_time.py --device cuda --width 4096 --depth 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from solution_code import write_answer_file  # noqa: E402

from optlab.launch import launch, plan_devices  # noqa: E402
from optlab.zero_bench import METHODS, comparison_rows, format_rows, machine_label  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments; the Week 7 solution's module file unless --zero1 names one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--zero1",
        type=Path,
        help="a module file with ZeroRedundancyOptimizer (default: the Week 7 solution's)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    if args.zero1 is not None and not args.zero1.is_file():
        parser.error(f"no module file {args.zero1}")
    with tempfile.TemporaryDirectory(prefix="zero1-") as tmp:
        if args.zero1 is None:
            args.zero1 = write_answer_file("week07_zero", "zero1", Path(tmp, "zero1.py"))
        return _compare(args)


def _compare(args: argparse.Namespace) -> int:
    """Run the three methods on every rank and print the table."""
    zero1 = str(args.zero1.resolve())
    plan = plan_devices(args.world_size, args.device)
    results = launch(
        "optlab.zero_bench",
        "compare_run",
        args.world_size,
        args=(zero1,),
        kwargs={
            "width": args.width,
            "depth": args.depth,
            "batch_size": args.batch,
            "steps": args.steps,
        },
        device=args.device,
        timeout=args.timeout,
    )
    n_params = results[0][METHODS[0]]["n_params"]
    print(plan.describe())
    print(
        format_rows(comparison_rows(results), machine_label(args.device), n_params, args.world_size)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
