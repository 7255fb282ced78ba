"""Every solution notebook runs within Binder's memory, with one thread.

The pipeline tests autograde each week's solution with OMP_NUM_THREADS=1 and record the peak
resident memory of the notebook's kernel; this checks it against Binder's limit. For wall time
on one pinned core as well, run ``python benchmarks/notebook_limits.py``.
"""

from __future__ import annotations

import pytest
from course_admin.paths import weeks

BINDER_MEMORY_MB = 1536


@pytest.mark.parametrize("week", weeks())
def test_solution_notebook_fits_binder_memory(reference_grades: dict, week: str) -> None:
    result = reference_grades[week]["solution"]
    assert result.peak_mb is not None, f"no memory figure for {week}: {result}"
    print(f"{week}: {result.wall_s} s, {result.peak_mb} MB")
    assert result.peak_mb < BINDER_MEMORY_MB, f"{week} needs {result.peak_mb} MB on Binder"
