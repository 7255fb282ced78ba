"""Run one notebook in a fresh kernel and send back what it did. Runs inside the sandbox.

    python notebook_runner.py CONFIG.json

The configuration names the notebook, the assignment's other files, the folder to run in,
where the hidden checks write their outputs, the demonstration cells not to run (by cell id:
each gets a note instead of outputs) and nbgrader's execution settings (the course's
``c.Execute`` configuration, passed on by the grader). Execution follows nbgrader's
``Execute`` preprocessor: errors do not stop the notebook, a cell that runs too long is
interrupted and marked ``CellTimeoutError``, and an error the kernel reported without showing
it is added to the cell. An output the kernel sends that no notebook can hold is left out, with
a note on standard error.

At the end it writes one zip archive to standard output: ``notebook.ipynb`` (the executed
notebook), ``outputs/*.pt`` (what the hidden checks produced) and ``run.json`` (whether the
kernel died, and the kernel's peak memory). Everything in it is the student's to forge: the
grader reads it as untrusted data. This file imports only the standard library, nbformat
and nbclient, and may be run as a plain script.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

# nbformat's schema validation imports an IRI grammar that takes seconds to build; notebooks
# never need it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import DeadKernelError  # noqa: E402

NOT_RUN = (
    "Not run while grading: this demonstration is not graded, and it only shows what your "
    "checked answers do. Run it yourself to see it.\n"
)
MALFORMED = "(the kernel sent an output that a notebook cannot hold; it was left out)\n"


class _Client(NotebookClient):
    """nbclient, except that an output the kernel sent malformed does not end the whole run.

    nbclient lets a malformed output's validation error escape, which stops the notebook:
    the student's code in the kernel can send anything. Such an output becomes a note on
    standard error instead (which fails a test cell, as an error would).
    """

    def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> Any:
        try:
            return super().output(outs, msg, display_id, cell_index)
        except nbformat.ValidationError:
            note = nbformat.v4.new_output("stream", name="stderr", text=MALFORMED)
            outs.append(note)
            return note


def _record_hidden_error(cell: Any = None, execute_reply: Any = None, **_kwargs: Any) -> None:
    """nbgrader's rule: an error the kernel reported but did not display is added to the cell."""
    content = (execute_reply or {}).get("content", {})
    if content.get("status") != "error":
        return
    if any(o.output_type == "error" and o.ename == content.get("ename") for o in cell.outputs):
        return
    output = nbformat.NotebookNode(output_type="error")
    output.ename = content.get("ename", "Error")
    output.evalue = content.get("evalue", "")
    output.traceback = content.get("traceback") or [
        "ERROR: An error occurred while showtraceback was disabled"
    ]
    cell.outputs.append(output)


class _Clock:
    """When the kernel was ready, and how long each kind of cell ran (for the benchmarks)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}
        self.began: dict[int, float] = {}
        self.seconds = {"test cells": 0.0, "answer cells": 0.0, "other cells": 0.0}

    def notebook_started(self, **_kwargs: Any) -> None:
        self.marks["kernel_ready"] = time.perf_counter() - self.start

    def cell_started(self, cell: Any = None, cell_index: int = 0, **_kwargs: Any) -> None:
        self.began[cell_index] = time.perf_counter()

    def cell_executed(self, cell: Any = None, cell_index: int = 0, **kwargs: Any) -> None:
        _record_hidden_error(cell=cell, **kwargs)
        nbgrader = cell.metadata.get("nbgrader", {})
        kind = (
            "test cells"
            if nbgrader.get("grade") and not nbgrader.get("solution")
            else ("answer cells" if nbgrader.get("solution") else "other cells")
        )
        self.seconds[kind] += time.perf_counter() - self.began.get(cell_index, time.perf_counter())
        self.marks["cells_done"] = time.perf_counter() - self.start

    def report(self) -> dict[str, float]:
        end = time.perf_counter() - self.start
        done = self.marks.get("cells_done", end)
        return {
            "kernel start": round(self.marks.get("kernel_ready", 0.0), 3),
            **{k: round(v, 3) for k, v in self.seconds.items()},
            "kernel shutdown": round(end - done, 3),
        }


def main(config_path: str) -> int:
    """Execute the configured notebook; write the archive to standard output."""
    config = json.loads(Path(config_path).read_text())
    # The archive goes to the original standard output; the kernel inherits a log file as its
    # stdout and stderr instead, so that nothing it prints can mix into the archive.
    archive_fd = os.dup(1)
    log = os.open(config["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    workdir = Path(config["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    files = Path(config["files"])
    if files.is_dir():
        shutil.copytree(files, workdir, dirs_exist_ok=True)
    nb = nbformat.read(config["notebook"], as_version=4)
    # nbclient passes over a cell without source: the demonstrations are emptied for the run.
    not_run = set(config.get("not_run", ()))
    demos = {
        i: cell.source
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and cell.get("id") in not_run
    }
    for i in demos:
        nb.cells[i].source = ""
    settings = config["execute"]
    clock = _Clock()
    client = _Client(
        nb,
        timeout=settings["timeout"],
        interrupt_on_timeout=settings["interrupt_on_timeout"],
        raise_on_iopub_timeout=settings["raise_on_iopub_timeout"],
        error_on_timeout=settings["error_on_timeout"],
        extra_arguments=settings["extra_arguments"],
        startup_timeout=settings["startup_timeout"],
        allow_errors=True,
        # Once the last cell is done nothing the kernel does counts: kill it rather than wait
        # 1-3 s for a polite shutdown (the sandbox ends every process it started anyway).
        shutdown_kernel="immediate",
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(workdir)}},
        on_notebook_start=clock.notebook_started,
        on_cell_start=clock.cell_started,
        on_cell_executed=clock.cell_executed,
    )
    report: dict[str, Any] = {"died": False, "error": None}
    try:
        client.execute()
    except DeadKernelError:
        report["died"] = True
    except Exception as exc:  # the kernel could not start, or nbclient gave up
        report["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    for i, source in demos.items():
        nb.cells[i].source = source
        nb.cells[i].outputs = [nbformat.v4.new_output("stream", name="stdout", text=NOT_RUN)]
    report["peak_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report["seconds"] = clock.report()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:  # a pipe: no need to pack
        out.writestr("notebook.ipynb", nbformat.writes(nb))
        out.writestr("run.json", json.dumps(report))
        outputs = Path(config["outputs"])
        for path in sorted(outputs.glob("*.pt")) if outputs.is_dir() else []:
            out.write(path, f"outputs/{path.name}")
    with os.fdopen(archive_fd, "wb") as out:
        out.write(archive.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
