"""Flag submissions whose code reaches for the grading machinery instead of answering.

Grading runs the notebook in a sandbox and decides the points outside it, so none of these
can change a grade; they are signs of intent, and an instructor reviews a flagged submission
(``./course review``) before its points count. The low-level routes to torch's own optimizer
kernels are here too: the sandbox switches off the ones the course knows of, and a student
who finds another must name one of these to use it.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

# (pattern, what it means): each a sign of tampering, not of a wrong answer.
SUSPICIOUS: tuple[tuple[str, str], ...] = (
    (r"\bcourse_grading\b|\bcourse_admin\b", "imports or names the grading code"),
    (r"gradebook", "refers to the gradebook"),
    (r"\bsys\.modules\b", "edits the module table"),
    (r"set_custom_exc|showtraceback|sys\.excepthook|InteractiveShell", "changes error reporting"),
    (r"__tracebackhide__", "hides tracebacks"),
    (r"setattr\(\s*torch|torch\.optim\.\w+\s*=(?!=)|torch\.optim\.\w+\.\w+\s*=(?!=)",
     "replaces parts of torch.optim"),
    (r"\bautograded\b|\bsubmitted\b|\.\./\.\.", "reaches into other folders of the course"),
    (r"/proc/", "looks into other processes"),
    (r"\b_fused_\w+|_VariableFunctions|_jit_get_operation|_get_operation_overload"
     r"|torch\.ops\.aten|torch\.library|\b_destroy\b",
     "calls torch's internal kernels directly"),
)  # fmt: skip


def scan_source(source: str) -> list[str]:
    """The reasons ``source`` (student code) looks like tampering; empty when it does not."""
    return [reason for pattern, reason in SUSPICIOUS if re.search(pattern, source)]


def flagged_cells(folder: Path) -> list[tuple[str, int, str, list[str]]]:
    """(notebook, cell index, source, reasons) of every code cell the student wrote that the
    scan flags (test cells, which nbgrader restores, are not the student's)."""
    found = []
    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or cell.metadata.get("nbgrader", {}).get("grade"):
                continue
            reasons = scan_source(cell.source)
            if reasons:
                found.append((path.name, index, cell.source, reasons))
    return found


def scan_notebook(folder: Path) -> list[str]:
    """The reasons any code cell the student wrote in ``folder`` looks like tampering."""
    reasons: list[str] = []
    for *_, found in flagged_cells(folder):
        reasons += [r for r in found if r not in reasons]
    return reasons
