"""Every solution notebook runs within Binder's memory, with one thread.

Each week's solution notebook runs top to bottom in a fresh kernel pinned to one core with
OMP_NUM_THREADS=1, as on Binder (``benchmarks/notebook_limits.py``, which also reports the
wall time), and the kernel's peak resident memory must stay under Binder's limit. (Grading
runs the notebook with parts of torch switched off, so its figures are not the student's.)
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from course_admin.paths import weeks

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from notebook_limits import BINDER_MEMORY_MB, measure  # noqa: E402


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, float]]:
    """Every week's solution measured, one notebook per core at a time (memory is per kernel,
    so running side by side changes no figure this test checks)."""
    cores = sorted(os.sched_getaffinity(0))

    def one(index_week: tuple[int, str]) -> tuple[str, dict[str, float]]:
        index, week = index_week
        (path,) = (REPO / "solutions" / week).glob("*.ipynb")
        return week, measure(path, core=cores[index % len(cores)])

    with ThreadPoolExecutor(len(cores)) as pool:
        return dict(pool.map(one, enumerate(weeks())))


@pytest.mark.parametrize("week", weeks())
def test_solution_notebook_fits_binder_memory(measured: dict, week: str) -> None:
    result = measured[week]
    print(f"{week}: {result['wall_s']} s, {result['peak_mb']} MB")
    assert result["peak_mb"] < BINDER_MEMORY_MB, f"{week} needs {result['peak_mb']} MB on Binder"
