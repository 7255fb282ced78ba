"""The two sides of the grading code stay apart, and every test cell has its check.

The student side (copied into the sandbox) may import only what runs there; it holds no
expected values and no mistake texts. Every test cell of every week hands its objects in under
its own grade id, and the trusted side has a check for exactly those grade ids.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch
from course_admin.kit import GRADING, build_kit, student_side_files
from course_admin.paths import weeks
from course_grading.core.checks import demonstrations, plan
from course_grading.core.mistakes import Mistake

REPO = Path(__file__).resolve().parent.parent
WEEKS = weeks(REPO / "source")
STUDENT_SIDE = {
    f"course_grading.{p.relative_to(GRADING).with_suffix('').as_posix().replace('/', '.')}"
    for p in student_side_files()
}
HAND_IN = re.compile(r'^hand_in\("(\w+)"(?:, .+)?\)$', re.M)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


# Outside grading, hand_in runs a whole check in the instructor's process (core.local); in the
# sandbox that module is absent. No other import crosses from the student side.
CROSSING = {("harness.py", "course_grading.core.local")}


@pytest.mark.parametrize("path", student_side_files(), ids=lambda p: str(p.relative_to(GRADING)))
def test_the_student_side_imports_only_what_the_sandbox_has(path: Path) -> None:
    for name in _imports(path) - {m for f, m in CROSSING if f == path.name}:
        top = name.split(".")[0]
        if top == "course_grading":
            assert name in STUDENT_SIDE or name.removesuffix(".__init__") in {
                s.removesuffix(".__init__") for s in STUDENT_SIDE
            }, f"{path.name} imports the trusted side: {name}"
        assert top != "course_admin", f"{path.name} imports the grader: {name}"
    if path.name == "__init__.py":
        assert not _imports(path) - {"__future__"}, f"{path} imports something"


def test_the_student_side_holds_no_mistake_texts() -> None:
    sentences = set()
    for week in WEEKS:
        for parts in plan(week).values():
            for part in parts:
                for value in part.context.values():
                    candidates = value if isinstance(value, (list, tuple)) else [value]
                    mistakes = getattr(value, "mistakes", ())
                    for item in [*candidates, *mistakes]:
                        if isinstance(item, Mistake):
                            sentences.add(item.sentence)
    assert sentences
    student_code = "\n".join(p.read_text() for p in student_side_files())
    leaked = [s for s in sentences if s[:60] in student_code]
    assert not leaked, leaked


@pytest.mark.parametrize("week", WEEKS)
def test_every_test_cell_hands_in_under_its_own_grade_id(week: str) -> None:
    (path,) = (REPO / "source" / week).glob("*.ipynb")
    cells = json.loads(path.read_text())["cells"]
    test_cells = {}
    for cell in cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and cell["cell_type"] == "code":
            source = "".join(cell["source"])
            hidden = re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", source, re.S)
            assert hidden, f"{meta['grade_id']} has no hidden part"
            calls = HAND_IN.findall(hidden[1])
            assert calls == [meta["grade_id"]], f"{meta['grade_id']}: hands in as {calls}"
            test_cells[meta["grade_id"]] = cell
    assert set(plan(week)) == set(test_cells), "checks() and the notebook's test cells differ"


def test_grade_ids_are_unique_across_weeks() -> None:
    seen: dict[str, str] = {}
    for week in WEEKS:
        for grade_id in plan(week):
            assert grade_id not in seen, f"{grade_id} is in {seen.get(grade_id)} and {week}"
            seen[grade_id] = week


def _bound_and_read(source: str) -> tuple[set[str], set[str]]:
    """The names a cell binds (anywhere in it) and the names it reads."""
    lines = ["pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines()]
    bound, read = set(), set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return bound, read


@pytest.mark.parametrize("week", WEEKS)
def test_demonstrations_not_run_when_grading_are_ungraded_and_not_needed(week: str) -> None:
    """Skipping a listed demonstration can change no score: it is not graded, and no later
    cell reads a name it binds before binding the name itself."""
    (path,) = (REPO / "source" / week).glob("*.ipynb")
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    ids = [c.get("id") for c in cells]
    for cell_id in demonstrations(week):
        assert cell_id in ids, f"{cell_id} is not a code cell of {path.name}"
        index = ids.index(cell_id)
        assert not cells[index]["metadata"].get("nbgrader"), f"{cell_id} is an nbgrader cell"
        live, _ = _bound_and_read("".join(cells[index]["source"]))
        needed: set[str] = set()
        for later in cells[index + 1 :]:
            bound, read = _bound_and_read("".join(later["source"]))
            needed |= (read - bound) & live
            live -= bound
        assert not needed, f"later cells read what {cell_id} binds: {sorted(needed)}"


@pytest.mark.parametrize("week", WEEKS)
def test_requests_are_plain_data(week: str, tmp_path: Path) -> None:
    kit = build_kit(week, tmp_path / "kit")
    for request in sorted((kit.root / "requests").glob("*.pt")):
        torch.load(request, weights_only=True)
    assert all(path.exists() for path in kit.covered)
