"""Run every solution notebook as Binder would (one core, one thread); print time and memory.

    python benchmarks/notebook_limits.py [NOTEBOOK ...]     # default: solutions/*/*.ipynb

Binder gives 1 CPU and 1-2 GB of memory, so each notebook must run top to bottom there. Each
notebook runs in a fresh kernel pinned to one core with OMP_NUM_THREADS=1; the peak memory is
the largest resident set of the kernel and anything it started (Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BINDER_MEMORY_MB = 1536
BINDER_WALL_S = 120


def run_one(path: Path, core: int | None = None) -> dict[str, float]:
    """Execute one notebook in this process's kernel child, pinned to ``core`` (default: the
    first this process may use); wall seconds and peak MB."""
    import nbformat
    from nbclient import NotebookClient

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0)) if core is None else core})
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": round(wall, 1), "peak_mb": round(peak_kb / 1024, 1)}


def measure(path: Path, core: int | None = None) -> dict[str, float]:
    """Measure ``path`` in a fresh process (so earlier notebooks don't count), pinned to
    ``core`` (default: the first this process may use).

    Week 5's experiment logs go to a temporary folder, removed after.
    """
    pin = [] if core is None else ["--core", str(core)]
    with tempfile.TemporaryDirectory(prefix="notebook-limits-") as runs:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPTLAB_RUNS=runs)
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(path), *pin],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{path} failed to run:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.core)))
        return 0
    paths = args.notebooks or sorted(REPO.glob("solutions/*/*.ipynb"))
    print(f"{'notebook':45} {'wall s':>8} {'peak MB':>8}   (Binder: {BINDER_WALL_S} s, "
          f"{BINDER_MEMORY_MB} MB)")  # fmt: skip
    over = 0
    for path in paths:
        row = measure(path)
        flag = "" if row["peak_mb"] < BINDER_MEMORY_MB and row["wall_s"] < BINDER_WALL_S else "  !"
        over += bool(flag)
        print(f"{path.parent.name:45} {row['wall_s']:8.1f} {row['peak_mb']:8.0f}{flag}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
