"""nbgrader preprocessors the course adds to nbgrader's own.

``StripSolutionMarkers`` cleans generated solutions. The other two replace, in nbgrader's
autograde pipeline, the one step that runs student code, and add one:

- :class:`SandboxedExecute` is nbgrader's ``Execute`` with the execution moved into a
  bubblewrap sandbox (:mod:`course_admin.sandbox`). Only the cells' outputs and what the
  hidden checks produced come back; the notebook's cells, sources and metadata stay the ones
  nbgrader prepared outside (with the test cells restored from the gradebook).
- :class:`HiddenCheckVerdicts` then judges, outside the sandbox, what each test cell's
  hidden check produced, and puts a failed verdict into the cell as an error output, so that
  nbgrader's own ``SaveAutoGrades`` scores the cell 0 and its feedback shows the message.
- :class:`SanitizeShownHTML` makes what the graded notebook shows inert in a browser (the
  formgrader, in the instructor's Jupyter server, and the feedback HTML), with nbconvert's
  ``SanitizeHTML``.

nbgrader runs in the grader's process; nothing in it runs student code.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import bleach
import nbformat
from nbconvert.preprocessors.sanitize import SanitizeHTML
from nbformat import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Unicode

from course_admin import sandbox
from course_admin.paths import RELEASE

# nbgrader loads this module with the course's configuration for every command; the grading
# code (which imports torch) is imported only when a notebook is autograded.

_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)
# The most one hidden check's outputs may weigh when they come back.
MAX_OUTPUT_FILE_MB = 64


class StripSolutionMarkers(NbGraderPreprocessor):
    """Remove the ``### BEGIN/END SOLUTION`` lines from solutions, keeping the code between."""

    def preprocess_cell(
        self, cell: NotebookNode, resources: dict[str, Any], index: int
    ) -> tuple[NotebookNode, dict[str, Any]]:
        if cell.cell_type == "code":
            cell.source = _MARKER.sub("", cell.source).rstrip("\n")
        return cell, resources


class GradingStopped(Exception):
    """The sandboxed run could not be graded; the message says why, for the instructor."""


# Kits built by SandboxedExecute itself (when nbgrader is run directly), per assignment.
_KITS: dict[str, Any] = {}


class SandboxedExecute(Execute):
    """nbgrader's Execute, run in a sandbox; see the module's docstring."""

    kit = Unicode("", help="The batch's grading kit (built here when empty).").tag(config=True)
    sandbox = Bool(True, help="Run in a bubblewrap sandbox (False: --no-sandbox).").tag(config=True)
    report = Unicode("", help="Where to write what happened to the run, as JSON.").tag(config=True)
    expected = Unicode(
        "", help="The cached expected values of the hidden checks (computed here when empty)."
    ).tag(config=True)

    def preprocess(
        self, nb: NotebookNode, resources: dict[str, Any]
    ) -> tuple[NotebookNode, dict[str, Any]]:
        from course_grading.core.checks import use_expected, warm_up

        from course_admin.cache import load_expected

        assignment = resources["nbgrader"]["assignment"]
        kit = self._kit(assignment)
        folder = Path(resources["metadata"]["path"])
        if self.expected:
            use_expected(assignment, load_expected(Path(self.expected)))
        # Whatever the verdicts still need is computed while the notebook runs.
        references = threading.Thread(target=warm_up, args=(assignment,), daemon=True)
        references.start()
        with tempfile.TemporaryDirectory(prefix="course-run-") as tmp:
            outcome = self._run(nb, kit, folder, Path(tmp))
        references.join()
        found = self._unpack(outcome)
        _merge_outputs(nb, found["notebook"])
        resources["course"] = {"hidden_outputs": found["outputs"]}
        return nb, resources

    def _kit(self, assignment: str) -> Any:
        from course_admin.kit import Kit, build_kit

        if self.kit:
            return Kit.open(Path(self.kit))
        if assignment not in _KITS:
            target = Path(tempfile.mkdtemp(prefix=f"course-kit-{assignment}-"))
            shutil.rmtree(target)
            _KITS[assignment] = build_kit(assignment, target)
        return _KITS[assignment]

    def _run(self, nb: NotebookNode, kit: Any, folder: Path, tmp: Path) -> sandbox.Outcome:
        given = tmp / "in"
        files = given / "files"
        shutil.copytree(folder, files, ignore=shutil.ignore_patterns("*.ipynb"))
        if self.sandbox:
            kit_at, given_at, scratch = Path("/grading/kit"), Path("/grading/in"), Path("/tmp")
        else:
            kit_at, given_at, scratch = kit.root, given, tmp / "scratch"
            scratch.mkdir()
        nbformat.write(nb, given / "notebook.ipynb")
        config = {
            "notebook": str(given_at / "notebook.ipynb"),
            "files": str(given_at / "files"),
            "workdir": str(scratch / "work" / folder.name),
            "outputs": str(scratch / "hidden-outputs"),
            "log": str(scratch / "run.log"),
            "not_run": list(kit.not_run),
            "execute": {
                "timeout": self.timeout,
                "startup_timeout": self.startup_timeout,
                "interrupt_on_timeout": self.interrupt_on_timeout,
                "raise_on_iopub_timeout": self.raise_on_iopub_timeout,
                "error_on_timeout": self.error_on_timeout,
                "extra_arguments": list(self.extra_arguments)
                or ["--HistoryManager.hist_file=:memory:"],
            },
        }
        (given / "config.json").write_text(json.dumps(config))
        mounts = sandbox.Mounts(
            readonly=[(kit.root, kit_at), (given, given_at)],
            covered=list(kit.covered),
            empty_file=kit.empty,
        )
        env = _environment(kit_at, scratch)
        command = [
            sys.executable,
            str(kit_at / "notebook_runner.py"),
            str(given_at / "config.json"),
        ]
        outcome = sandbox.run(command, mounts, env, sandbox=self.sandbox)
        self._write_report(outcome)
        return outcome

    def _write_report(self, outcome: sandbox.Outcome, **extra: Any) -> None:
        if not self.report:
            return
        path = Path(self.report)
        report = json.loads(path.read_text()) if path.exists() else {}
        report.update(
            {
                "stopped": outcome.stopped,
                "sandboxed": outcome.sandboxed,
                "wall_s": round(outcome.wall_s, 1),
                "returncode": outcome.returncode,
                **extra,
            }
        )
        path.write_text(json.dumps(report))

    def _unpack(self, outcome: sandbox.Outcome) -> dict[str, Any]:
        import torch

        if outcome.stopped:
            raise GradingStopped(outcome.stopped)
        try:
            archive = zipfile.ZipFile(io.BytesIO(outcome.stdout))
            run = json.loads(_member(archive, "run.json", 1))
            notebook = nbformat.reads(_member(archive, "notebook.ipynb", 256).decode(), 4)
        except Exception as exc:
            raise GradingStopped(
                "the sandboxed run sent back nothing readable "
                f"({type(exc).__name__}; exit code {outcome.returncode}): {outcome.stderr[-500:]}"
            ) from None
        peak_kb = run.get("peak_kb") if isinstance(run, dict) else None
        seconds = run.get("seconds") if isinstance(run.get("seconds"), dict) else {}
        if run.get("died"):
            raise GradingStopped(
                "the notebook's kernel died while running (sys.exit, os._exit or a crash)"
            )
        if run.get("error"):
            raise GradingStopped(f"the notebook could not be run: {str(run['error'])[:300]}")
        outputs = {}
        for name in archive.namelist():
            match = re.fullmatch(r"outputs/([A-Za-z0-9_]+)\.pt", name)
            if match is None:
                continue
            try:
                data = _member(archive, name, MAX_OUTPUT_FILE_MB)
                outputs[match[1]] = torch.load(io.BytesIO(data), weights_only=True)
            except Exception:  # unreadable outputs count as no outputs
                continue
        # What the run says it spent its time on (the student's to forge: for benchmarks only).
        seconds["hidden checks"] = sum(
            o["seconds"] for o in outputs.values()
            if isinstance(o, dict) and isinstance(o.get("seconds"), float)
        )  # fmt: skip
        self._write_report(
            outcome, peak_kb=peak_kb if isinstance(peak_kb, int) else None, seconds=seconds
        )
        return {"notebook": notebook, "outputs": outputs}


def _member(archive: zipfile.ZipFile, name: str, limit_mb: int) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > limit_mb * 2**20:
        raise ValueError(f"{name} is larger than {limit_mb} MB")
    with archive.open(info) as f:
        data = f.read(limit_mb * 2**20 + 1)
    if len(data) > limit_mb * 2**20:
        raise ValueError(f"{name} is larger than {limit_mb} MB")
    return data


def _environment(kit: Path, scratch: Path) -> dict[str, str]:
    """The sandbox's whole environment: nothing of the instructor's is passed on."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch / "home"),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        # The kit's optlab comes before the one the environment's install points at.
        "PYTHONPATH": f"{kit / 'stubs'}:{kit / 'grading'}:{kit / 'helpers'}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "COURSE_TORCH_STUBS": str(kit / "stubs" / "manifest.json"),
        "COURSE_CHECK_REQUESTS": str(kit / "requests"),
        "COURSE_CHECK_OUTPUTS": str(scratch / "hidden-outputs"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "JUPYTER_RUNTIME_DIR": str(scratch / "jupyter"),
        "IPYTHONDIR": str(scratch / "ipython"),
        "MPLCONFIGDIR": str(scratch / "matplotlib"),
        # Week 5's experiment logs stay in the sandbox.
        "OPTLAB_RUNS": str(scratch / "runs"),
    }


def _merge_outputs(nb: NotebookNode, executed: NotebookNode) -> None:
    """Copy the outputs of ``executed`` into ``nb``, cell by cell, keeping ``nb``'s cells.

    The executed notebook comes from the sandbox, so only outputs are taken from it, each
    rebuilt from the fields an output may have; a notebook whose cells no longer line up with
    the ones sent in cannot be graded.
    """
    cells = executed.get("cells", [])
    if len(cells) != len(nb.cells) or any(
        a.get("id") != b.get("id") or a.get("cell_type") != b.get("cell_type")
        for a, b in zip(nb.cells, cells, strict=True)
    ):
        raise GradingStopped("the notebook came back from the sandbox with other cells")
    for cell, ran in zip(nb.cells, cells, strict=True):
        if cell.cell_type != "code":
            continue
        count = ran.get("execution_count")
        cell.execution_count = count if isinstance(count, int) else None
        cell.outputs = [o for o in map(_clean_output, ran.get("outputs", [])) if o is not None]


def _clean_output(output: Any) -> NotebookNode | None:
    """One output rebuilt from its valid fields (``None`` for anything that is not one)."""
    if not isinstance(output, dict):
        return None
    kind = output.get("output_type")
    if kind == "stream" and output.get("name") in ("stdout", "stderr"):
        return nbformat.v4.new_output("stream", name=output["name"], text=_text(output.get("text")))
    if kind == "error":
        trace = output.get("traceback")
        return nbformat.v4.new_output(
            "error",
            ename=str(output.get("ename", "")),
            evalue=str(output.get("evalue", "")),
            traceback=[str(t) for t in trace] if isinstance(trace, list) else [],
        )
    if kind in ("display_data", "execute_result"):
        data = output.get("data")
        if not isinstance(data, dict):
            return None
        bundle = {
            str(mime): value
            for mime, value in data.items()
            if isinstance(value, (str, dict))
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        }
        if kind == "display_data":
            return nbformat.v4.new_output("display_data", data=bundle)
        count = output.get("execution_count")
        return nbformat.v4.new_output(
            "execute_result", data=bundle, execution_count=count if isinstance(count, int) else None
        )
    return None


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return str(value) if value is not None else ""


class HiddenCheckVerdicts(NbGraderPreprocessor):
    """Judge each test cell's hidden check outside the sandbox; show a failure in the cell."""

    def preprocess(
        self, nb: NotebookNode, resources: dict[str, Any]
    ) -> tuple[NotebookNode, dict[str, Any]]:
        from course_grading.core.checks import verdict

        assignment = resources["nbgrader"]["assignment"]
        outputs = resources.get("course", {}).get("hidden_outputs", {})
        for cell in nb.cells:
            if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
                continue
            # The course's test cells never end with a value; nbgrader would read one as a
            # partial score, so one there can only be forged.
            cell.outputs = [o for o in cell.outputs if o.output_type != "execute_result"]
            message = verdict(
                assignment,
                cell.metadata.nbgrader["grade_id"],
                outputs.get(cell.metadata.nbgrader["grade_id"]),
            )
            if message is not None:
                cell.outputs.insert(
                    0,
                    nbformat.v4.new_output(
                        "error",
                        ename="CheckFailed",
                        evalue=message,
                        traceback=[f"\x1b[0;31mCheckFailed\x1b[0m: {message}"],
                    ),
                )
        return nb, resources


class SanitizeShownHTML(SanitizeHTML):
    """nbconvert's ``SanitizeHTML`` on what the student controls in a graded notebook.

    Every output comes from the student's kernel. Plain text, LaTeX, JSON and PNG/JPEG images
    are kept as they are. HTML and Markdown are cleaned with bleach: markup outside
    :data:`SHOWN_TAGS` shows as text, and only attributes that neither run code nor load
    anything by themselves stay. The rest (JavaScript, SVG, widget views) is dropped, and so
    is the notebook's widget state. A Markdown or raw cell is cleaned unless it is, word for
    word, one of the release's, so the course's own text (and its formulas) reaches the
    grader unchanged.
    """

    enabled = Bool(True, help="Clean the graded notebook (nbconvert's default: off).").tag(
        config=True
    )

    def preprocess(
        self, nb: NotebookNode, resources: dict[str, Any]
    ) -> tuple[NotebookNode, dict[str, Any]]:
        course = {cell.source for cell in _release(resources) if cell.cell_type != "code"}
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = self.sanitize_code_outputs(cell.outputs)
            elif cell.source not in course:
                cell.source = self.sanitize_html_tags(cell.source)
        return nb, resources

    def sanitize_html_tags(self, html_str: str) -> str:
        return bleach.clean(
            html_str,
            tags=SHOWN_TAGS,
            attributes=_shown_attribute,
            protocols={*bleach.ALLOWED_PROTOCOLS, "data"},  # narrowed to images below
            strip_comments=True,
        )


# Markup a graded notebook's HTML may keep: text, tables, and inline PNG/JPEG images (the
# static picture that the notebooks' interactive figures leave behind).
SHOWN_TAGS = {
    *bleach.ALLOWED_TAGS,
    *("p", "br", "hr", "div", "span", "pre", "sub", "sup", "img"),
    *("h1", "h2", "h3", "h4", "h5", "h6"),
    *("table", "thead", "tbody", "tr", "th", "td"),
}
_INLINE_IMAGE = re.compile(r"data:image/(png|jpeg);base64,[A-Za-z0-9+/=\s]*")


def _shown_attribute(tag: str, name: str, value: str) -> bool:
    """Whether ``name="value"`` may stay on ``tag``: nothing that runs code or loads a URL
    by itself (a link loads only when followed)."""
    if name in ("class", "title", "alt", "width", "height", "colspan", "rowspan"):
        return True
    if tag == "a" and name == "href":
        return value.startswith(("http://", "https://", "mailto:", "#"))
    return tag == "img" and name == "src" and _INLINE_IMAGE.fullmatch(value) is not None


def _release(resources: dict[str, Any]) -> list[NotebookNode]:
    """The cells of the release notebook that a submission answers (none if there is none)."""
    names = resources["nbgrader"]
    path = RELEASE / names["assignment"] / f"{names['notebook']}.ipynb"
    return nbformat.read(path, as_version=4).cells if path.is_file() else []
