"""nbgrader preprocessors the course adds to nbgrader's own."""

from __future__ import annotations

import re
from typing import Any

from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)


class StripSolutionMarkers(NbGraderPreprocessor):
    """Remove the ``### BEGIN/END SOLUTION`` lines from solutions, keeping the code between."""

    def preprocess_cell(
        self, cell: NotebookNode, resources: dict[str, Any], index: int
    ) -> tuple[NotebookNode, dict[str, Any]]:
        if cell.cell_type == "code":
            cell.source = _MARKER.sub("", cell.source).rstrip("\n")
        return cell, resources
