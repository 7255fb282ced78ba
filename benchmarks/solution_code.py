"""The answer cells of a solution notebook, as a module or a module file (for benchmarks)."""

from __future__ import annotations

import types
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def load_answers(week: str) -> types.ModuleType:
    """Run the imports and answer cells of ``solutions/<week>`` in a fresh module namespace."""
    nb = _solution_notebook(week)
    module = types.ModuleType(f"{week}_answers")
    exec("import torch\nimport numpy as np\nfrom collections import defaultdict", module.__dict__)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and not cell.source.startswith("%%"):
            exec(compile(cell.source, f"{week}:{meta['grade_id']}", "exec"), module.__dict__)
    return module


def write_answer_file(week: str, grade_id: str, target: Path) -> Path:
    """Write the ``%%writefile`` answer cell ``grade_id`` of ``solutions/<week>`` to ``target``."""
    for cell in _solution_notebook(week).cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            magic, _, body = cell.source.partition("\n")
            if not magic.startswith("%%writefile"):
                raise ValueError(f"answer cell {grade_id} of {week} writes no file")
            target.write_text(body + "\n")
            return target
    raise KeyError(f"no answer cell {grade_id} in solutions/{week}")


def _solution_notebook(week: str) -> nbformat.NotebookNode:
    """The one solution notebook of ``week``."""
    paths = sorted((REPO / "solutions" / week).glob("*.ipynb"))
    if len(paths) != 1:
        raise FileNotFoundError(f"no solution notebook in solutions/{week}")
    return nbformat.read(paths[0], as_version=4)
