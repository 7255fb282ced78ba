"""Rank start-up: how long ``optlab.launch.launch`` takes to run a trivial function.

    python benchmarks/launch_startup.py [--ranks 2 4] [--repeats N] [--rounds R]
        [--launcher PATH ...]

Times ``launch()`` of a function that only returns its rank (so: starting the ranks, joining the
process group, sending the result back, stopping the ranks) on 2 and 4 ranks, ``repeats`` times
each, and prints min / median / max per launcher; "first" is the first launch (on the first
number of ranks) of a fresh interpreter, which also starts the helper process that imports torch
once for all ranks. A launch that fails is left out of the times and counted under "failed".

Each launcher runs in fresh interpreters: the repository's ``optlab.launch``, and each
``--launcher PATH``, another version of that module, imported as ``optlab.launch`` from a
temporary package so that the processes it starts find it too (except a fork server's: on
Python 3.11 it imports the installed ``optlab.launch``, so the ranks of a version that starts
them from multiprocessing's fork server run the installed rank code). To compare with the
committed version::

    git show HEAD:optlab/launch.py > /tmp/old_launch.py
    python benchmarks/launch_startup.py --launcher /tmp/old_launch.py

The launchers take turns, ``rounds`` times, so that a machine that gets busier slows them alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CURRENT = "optlab.launch"
WORKER = "import torch.distributed as dist\n\n\ndef rank():\n    return dist.get_rank()\n"


def measure(launcher: str, ranks: list[int], repeats: int) -> dict[str, list[float]]:
    """In this interpreter: the first launch's time and ``repeats`` more, per number of ranks."""
    with tempfile.TemporaryDirectory(prefix="launch-startup-") as tmp:
        if launcher != CURRENT:  # the other version, as the package optlab.launch
            package = Path(tmp, "optlab")
            package.mkdir()
            (package / "__init__.py").write_text("")
            (package / "launch.py").write_text(Path(launcher).read_text())
            sys.path.insert(0, tmp)
        from optlab.launch import LaunchError, launch

        workers = Path(tmp, "workers.py")
        workers.write_text(WORKER)
        times: dict[str, list[float]] = {}
        for n in ranks:
            for i in range(repeats + (n == ranks[0])):
                key = "first" if n == ranks[0] and i == 0 else str(n)
                start = time.perf_counter()
                try:
                    assert launch(workers, "rank", n, timeout=120) == list(range(n))
                    seconds = time.perf_counter() - start
                except LaunchError as exc:  # counted apart, as NaN
                    print(f"{key}: {str(exc).splitlines()[-1]}", file=sys.stderr)
                    seconds = math.nan
                times.setdefault(key, []).append(seconds)
    return times


def _row(name: str, key: str, values: list[float]) -> str:
    done = [v for v in values if not math.isnan(v)]
    low, mid, high = (min(done), statistics.median(done), max(done)) if done else (math.nan,) * 3
    return (
        f"{name:<24}{key:>6}{len(done):>5}{low:>9.3f}{mid:>9.3f}{high:>9.3f}"
        f"{len(values) - len(done):>8}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run every launcher in fresh interpreters, in turns, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=10, help="timed launches per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--launcher", action="append", default=[], help="another launch.py")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one round, in a child
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.ranks, args.repeats)))
        return 0

    launchers = [CURRENT] + [str(Path(p).resolve()) for p in args.launcher]
    pooled: dict[str, dict[str, list[float]]] = {name: {} for name in launchers}
    for round_ in range(args.rounds):
        order = launchers if round_ % 2 == 0 else launchers[::-1]
        for name in order:
            command = [sys.executable, __file__, "--measure", name, "--repeats", str(args.repeats)]
            command += ["--ranks", *map(str, args.ranks)]
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            for key, values in json.loads(proc.stdout.splitlines()[-1]).items():
                pooled[name].setdefault(key, []).extend(values)

    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"Python {platform.python_version()}; load average {load}"
    )
    print(
        f"{'launcher':<24}{'ranks':>6}{'n':>5}{'min s':>9}{'median s':>9}{'max s':>9}{'failed':>8}"
    )
    for name in launchers:
        label = name if name == CURRENT else Path(name).name
        for key in ("first", *map(str, args.ranks)):
            print(_row(label, key, pooled[name][key]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
