"""Flag submissions whose code reaches for the grading machinery instead of answering.

Student code runs in the same kernel as the hidden tests, so it could replace a check, hide
errors from nbgrader or write where it should not. The checks guard against the common cases
at run time; this scan catches the deliberate ones in the code itself, so that an instructor
reviews them before the points count.
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
)  # fmt: skip


def scan_source(source: str) -> list[str]:
    """The reasons ``source`` (student code) looks like tampering; empty when it does not."""
    return [reason for pattern, reason in SUSPICIOUS if re.search(pattern, source)]


def scan_notebook(folder: Path) -> list[str]:
    """Scan the code cells a student wrote (not the test cells nbgrader restores)."""
    reasons: list[str] = []
    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code" or cell.metadata.get("nbgrader", {}).get("grade"):
                continue
            for reason in scan_source(cell.source):
                if reason not in reasons:
                    reasons.append(reason)
    return reasons
