"""Load the answer cells of a solution notebook as a module (for benchmarks)."""

from __future__ import annotations

import types
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def load_answers(week: str) -> types.ModuleType:
    """Run the imports and answer cells of ``solutions/<week>`` in a fresh module namespace."""
    paths = sorted((REPO / "solutions" / week).glob("*.ipynb"))
    if len(paths) != 1:
        raise FileNotFoundError(f"no solution notebook in solutions/{week}")
    (path,) = paths
    nb = nbformat.read(path, as_version=4)
    module = types.ModuleType(f"{week}_answers")
    exec("import torch\nimport numpy as np\nfrom collections import defaultdict", module.__dict__)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and not cell.source.startswith("%%"):
            exec(compile(cell.source, f"{week}:{meta['grade_id']}", "exec"), module.__dict__)
    return module
