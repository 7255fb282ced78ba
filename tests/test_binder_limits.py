"""Every solution notebook runs within Binder's memory on one core with one thread."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "notebook_limits", REPO / "benchmarks" / "notebook_limits.py"
)
notebook_limits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebook_limits)

SOLUTIONS = sorted(REPO.glob("solutions/*/*.ipynb"))


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.parent.name)
def test_solution_notebook_fits_binder_memory(path: Path) -> None:
    row = notebook_limits.measure(path)
    print(f"{path.parent.name}: {row['wall_s']} s, {row['peak_mb']} MB")
    assert row["peak_mb"] < notebook_limits.BINDER_MEMORY_MB, row
