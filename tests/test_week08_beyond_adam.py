"""Week 8's hidden checks, in one process: the solution passes, correct variants pass, every
catalogued mistake is caught and named, the memory formula is torch's.

The answers come from the source notebook's answer cells (and the given Adafactor class),
executed as the notebook runs them; a wrong or correct variant replaces one answer cell.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from course_fixture import wrong_answer, wrong_answer_files
from course_grading.core.local import run_check
from course_grading.core.mistakes import Mistake
from course_grading.core.torch_hiding import manifest
from course_grading.week08 import cases
from course_grading.week08.checks import SWITCHED_OFF, checks
from course_grading.week08.mistakes import (
    FACTORED_MISTAKES,
    MEMORY_MISTAKES,
    MUON_DIRECT,
    MUON_MISTAKES,
    NS_MISTAKES,
    OWN_NS_SENTENCE,
    SPLIT_MISTAKES,
)

from optlab.memory import measure_state

REPO = Path(__file__).resolve().parent.parent
WEEK = "week08_beyond_adam"
NOTEBOOK = REPO / "source" / WEEK / f"{WEEK}.ipynb"
WRONG = REPO / "tests" / "submissions" / WEEK
CORRECT = REPO / "tests" / "correct_answers" / WEEK
# The cells a namespace is built from, in the notebook's order (the given Adafactor class
# calls factored_second_moment; the Muon calls newton_schulz).
ANSWERS = (
    "newton_schulz",
    "muon",
    "split_params",
    "factored_second_moment",
    "w08-adafactor-class",
    "optimizer_state_bytes",
)
PREAMBLE = "import math\nimport torch\nimport numpy as np\nfrom torch import nn\n"


def _notebook() -> tuple[dict[str, str], dict[str, list[str]]]:
    """The answer cells (by grade id, the given class by cell id) and, for every test cell,
    the names of the objects its hidden part hands in."""
    answers, handed_in = {}, {}
    for cell in json.loads(NOTEBOOK.read_text())["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell["source"])
        if meta.get("solution"):
            answers[meta["grade_id"]] = source
        elif cell.get("id") == "w08-adafactor-class":
            answers[cell["id"]] = source
        elif meta.get("grade") and cell["cell_type"] == "code":
            names = re.search(r'^hand_in\("\w+", (.+)\)$', source, re.M)[1]
            handed_in[meta["grade_id"]] = [n.strip() for n in names.split(",")]
    return answers, handed_in


SOLUTION, HANDED_IN = _notebook()
TEST_CELLS = list(HANDED_IN)
MUON_CELLS = [c for c in TEST_CELLS if c.startswith("muon_test")]


def namespace(**replace: str) -> dict[str, Any]:
    """The notebook's namespace after its answer cells ran (``replace`` by grade id)."""
    ns: dict[str, Any] = {}
    exec(PREAMBLE, ns)
    for key in ANSWERS:
        exec(replace.get(key, SOLUTION[key]), ns)
    return ns


def verdict(grade_id: str, ns: dict[str, Any]) -> str | None:
    """The hidden check of ``grade_id`` on what the cell hands in from ``ns``."""
    return run_check(WEEK, grade_id, *[ns[name] for name in HANDED_IN[grade_id]])


def _exercise_cells(exercise: str) -> list[str]:
    return [c for c in TEST_CELLS if c.startswith(f"{exercise}_test")]


def _muon_with(update: Any, **methods: Any) -> type:
    """The solution's Muon (constructor, validation, step) with another ``update``."""
    base = namespace()["Muon"]
    return type("Muon", (base,), {"update": update, **methods})


def _rule_muon(rule: Any) -> type:
    return _muon_with(lambda self, p, grad, state, group: rule(p, grad, state, group))


@pytest.fixture(scope="module")
def solution() -> dict[str, Any]:
    return namespace()


# --- the solution and correct variants ---------------------------------------------------------


def test_every_test_cell_has_a_check_and_hands_in_what_its_producers_take() -> None:
    assert set(checks()) == set(TEST_CELLS)
    assert all(HANDED_IN[c] == ["Muon", "newton_schulz"] for c in MUON_CELLS if "valid" not in c)


def test_the_solution_passes_every_test_cell(solution: dict[str, Any]) -> None:
    failed = {c: m for c in TEST_CELLS if (m := verdict(c, solution))}
    assert not failed


@pytest.mark.parametrize("path", wrong_answer_files(CORRECT), ids=lambda p: p.stem)
def test_a_correct_variant_gets_full_marks(path: Path) -> None:
    grade_id, expect, source = wrong_answer(path, {})
    assert expect == "full marks"
    ns = namespace(**{grade_id: source})
    graded = _exercise_cells(grade_id)
    if grade_id == "newton_schulz":  # the Muon calls it
        graded += MUON_CELLS
    failed = {c: m for c in graded if (m := verdict(c, ns))}
    assert not failed


def test_plain_products_and_float32_differ_from_torch_by_rounding_only() -> None:
    """The one-step errors of correct roundings are far below the tolerance, not zero."""
    from course_grading.week08.mistakes import ns_variant

    case = cases.NS_REFERENCE_CASES[0]
    reference = cases.torch_ns(case.matrix()).float()
    for variant in (ns_variant(plain=True), ns_variant(dtype=torch.float32)):
        err = cases.rel_err(variant(case.matrix()), reference)
        assert 1e-3 < err < cases.TOL_NS / 2


def test_the_rules_newton_schulz_is_torchs_to_the_bit() -> None:
    from course_grading.week08.mistakes import TORCH_NS

    for case in cases.NS_REFERENCE_CASES + cases.NS_SHAPE_CASES:
        G = case.matrix()
        args = (case.steps, case.coefficients, case.eps)
        assert torch.equal(TORCH_NS(G, *args), cases.torch_ns(G, *args)), case.label


# --- wrong answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", wrong_answer_files(WRONG), ids=lambda p: p.stem)
def test_a_wrong_answer_fails_its_exercise_and_is_named(path: Path) -> None:
    grade_id, expect, source = wrong_answer(path, {})
    ns = namespace(**{grade_id: source})
    messages = []
    for cell in _exercise_cells(grade_id):
        message = verdict(cell, ns)
        if message and expect in message:
            return
        messages.append(message)
    pytest.fail(f"no check of {grade_id} says {expect!r}: {messages}")


# --- the catalogues ----------------------------------------------------------------------------


def _named_where_caught(mistake: Mistake, cells: list[str], ns: dict[str, Any]) -> None:
    failed = {c: m for c in cells if (m := verdict(c, ns))}
    assert failed, f"{mistake.id} passes {cells}"
    unnamed = {c: m for c, m in failed.items() if mistake.sentence not in m}
    assert not unnamed, f"{mistake.id} is not named: {unnamed}"


@pytest.mark.parametrize("mistake", NS_MISTAKES, ids=lambda m: m.id)
def test_every_newton_schulz_mistake_is_caught_and_named(
    mistake: Mistake, solution: dict[str, Any]
) -> None:
    _named_where_caught(mistake, _exercise_cells("newton_schulz"), {"newton_schulz": mistake.rule})


# Where each Muon mistake is caught (the cheapest cell of those the research lists).
MUON_CATCHERS = {
    "muon/nesterov_ignored": "muon_test_nesterov",
    "muon/nesterov_always": "muon_test_nesterov",
    "muon/sgd_momentum_buffer": "muon_test_basic",
    "muon/ns_one_step_short": "muon_test_ns_settings",
    "muon/ns_no_normalization": "muon_test_adjust_lr",
    "muon/ns_settings_ignored": "muon_test_ns_settings",
    "muon/adjusted_lr_for_decay": "muon_test_adjust_lr",
    "muon/decay_after_update": "muon_test_adjust_lr",
    "muon/decay_without_lr": "muon_test_adjust_lr",
    "muon/no_weight_decay": "muon_test_adjust_lr",
    "muon/shape_ratio_inverted": "muon_test_adjust_lr",
    "muon/lr_not_adjusted": "muon_test_adjust_lr",
    "muon/match_rms_ignored": "muon_test_adjust_lr",
    "muon/match_rms_min": "muon_test_adjust_lr",
}


def test_every_muon_mistake_has_a_catching_cell() -> None:
    assert set(MUON_CATCHERS) == {m.id for m in MUON_MISTAKES}


@pytest.mark.parametrize("mistake", MUON_MISTAKES, ids=lambda m: m.id)
def test_every_muon_mistake_is_caught_and_named(mistake: Mistake, solution: dict[str, Any]) -> None:
    ns = {**solution, "Muon": _rule_muon(mistake.rule)}
    _named_where_caught(mistake, [MUON_CATCHERS[mistake.id]], ns)


def test_a_muon_right_but_for_its_newton_schulz_is_told_so(solution: dict[str, Any]) -> None:
    ns = namespace()
    ns["newton_schulz"] = NS_MISTAKES[1].rule  # one step short; the Muon calls it
    message = verdict("muon_test_basic", ns)
    assert message is not None and OWN_NS_SENTENCE in message


def test_the_momentum_buffer_is_read_from_state_and_survives_a_state_dict(
    solution: dict[str, Any],
) -> None:
    def update_outside(self: Any, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict):
        # The buffer lives in an attribute; state only gets a copy, which is never read.
        buffers = self.__dict__.setdefault("buffers", {})
        keep = {"momentum_buffer": buffers[id(p)]} if id(p) in buffers else {}
        solution["Muon"].update(self, p, grad, keep, group)
        buffers[id(p)] = keep["momentum_buffer"]
        state["momentum_buffer"] = keep["momentum_buffer"].clone()

    outside = _muon_with(update_outside)
    message = verdict("muon_test_groups_frozen", {**solution, "Muon": outside})
    assert message is not None and MUON_DIRECT["muon/buffer_outside_state"][1:] in message


def test_a_frozen_matrix_must_not_move(solution: dict[str, Any]) -> None:
    def step(self: Any, closure: Any = None) -> None:
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:  # decays even without a gradient
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                    else:
                        self.update(p, p.grad, self.state[p], group)

    moving = _muon_with(solution["Muon"].update, step=step)
    message = verdict("muon_test_groups_frozen", {**solution, "Muon": moving})
    assert message is not None and MUON_DIRECT["muon/frozen_moved"] in message


def test_muon_must_refuse_invalid_hyperparameters(solution: dict[str, Any]) -> None:
    base = solution["Muon"]

    def __init__(self: Any, params: Any, lr: float = 1e-3, **kwargs: Any) -> None:  # noqa: N807
        torch.optim.Optimizer.__init__(self, params, {**cases.MUON_DEFAULTS, "lr": lr, **kwargs})

    lenient = type("Muon", (base,), {"__init__": __init__})
    message = verdict("muon_test_validation", {"Muon": lenient})
    assert message is not None and MUON_DIRECT["muon/accepts_non_2d"] in message

    def positive(self: Any, params: Any, **kwargs: Any) -> None:
        # Negative values are made positive instead of refused.
        kwargs = {k: abs(v) if isinstance(v, float) else v for k, v in kwargs.items()}
        base.__init__(self, params, **kwargs)

    silent = type("Muon", (base,), {"__init__": positive})
    message = verdict("muon_test_validation", {"Muon": silent})
    assert message is not None and MUON_DIRECT["muon/no_validation"] in message


def test_the_muon_signature_is_torchs(solution: dict[str, Any]) -> None:
    base = solution["Muon"]

    def __init__(self: Any, params: Any, lr: float = 0.02, **kwargs: Any) -> None:  # noqa: N807
        base.__init__(self, params, lr=lr, **kwargs)

    other = type("Muon", (base,), {"__init__": __init__})
    message = verdict("muon_test_basic", {**solution, "Muon": other})
    assert message is not None and "default lr should be 0.001" in message


def test_torchs_muon_and_adafactor_are_refused(solution: dict[str, Any]) -> None:
    class Extends(torch.optim.Muon):
        pass

    message = verdict("muon_test_basic", {**solution, "Muon": Extends})
    assert message is not None and "is, or extends, torch.optim.Muon" in message

    def ns(G: torch.Tensor, steps: int = 5, coefficients: Any = (3.4445, -4.775, 2.0315), eps=1e-7):
        return torch.optim._muon._zeropower_via_newtonschulz(G, coefficients, steps, eps)

    message = verdict("newton_schulz_test_reference", {"newton_schulz": ns})
    assert message is not None and "switched off while the course grades" in message

    def state_bytes(name: str, shape: Any, dtype: torch.dtype = torch.float32) -> int:
        p = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.Adafactor([p])
        p.grad = torch.ones_like(p)
        optimizer.step()
        return measure_state(optimizer)[0].total

    message = verdict("optimizer_state_bytes_test_torch", {"optimizer_state_bytes": state_bytes})
    assert (
        message is not None and "torch.optim.Adafactor.__init__, which is switched off" in message
    )


@pytest.mark.parametrize("mistake", SPLIT_MISTAKES, ids=lambda m: m.id)
def test_every_split_mistake_is_caught_and_named(mistake: Mistake) -> None:
    _named_where_caught(mistake, _exercise_cells("split_params"), {"split_params": mistake.rule})


@pytest.mark.parametrize("mistake", FACTORED_MISTAKES, ids=lambda m: m.id)
def test_every_factored_mistake_is_caught_and_named(mistake: Mistake) -> None:
    ns = {**namespace(), "factored_second_moment": mistake.rule}
    _named_where_caught(mistake, ["factored_second_moment_test_basic"], ns)
    exec(SOLUTION["w08-adafactor-class"], ns)  # the notebook's Adafactor on it fails too
    assert verdict("factored_second_moment_test_adafactor", ns) is not None


@pytest.mark.parametrize("mistake", MEMORY_MISTAKES, ids=lambda m: m.id)
def test_every_memory_mistake_is_caught_and_named(mistake: Mistake) -> None:
    ns = {"optimizer_state_bytes": mistake.rule}
    _named_where_caught(mistake, ["optimizer_state_bytes_test_torch"], ns)


@pytest.mark.parametrize("name", cases.MEMORY_NAMES)
def test_the_memory_formula_is_what_torchs_optimizers_hold(name: str) -> None:
    assert torch.get_default_dtype() == torch.float32
    optimizer_cls = getattr(torch.optim, name)
    for shape in [(1000,), (64, 32), (4, 3, 5), (16, 8, 3, 3), (7,), (1,)]:
        for dtype in cases.MEMORY_DTYPES:
            p = torch.zeros(shape, dtype=dtype, requires_grad=True)
            want = cases.memory_reference(name, shape, dtype)
            if want == cases.RAISES:
                with pytest.raises(ValueError):
                    optimizer_cls([p])
                continue
            optimizer = optimizer_cls([p])
            p.grad = torch.ones_like(p)
            optimizer.step()
            assert measure_state(optimizer)[0].total == want, (name, shape, dtype)


# --- the sandbox's stubs -----------------------------------------------------------------------

STUB_CHECK = """
import torch

p = torch.zeros(3, requires_grad=True)
p.grad = torch.ones(3)
for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
    cls([p]).step()
for cls in (torch.optim.Muon, torch.optim.Adafactor):
    try:
        cls([torch.zeros(2, 2, requires_grad=True)])
    except RuntimeError as error:
        assert "switched off" in str(error), error
    else:
        raise AssertionError(f"{cls} is on")
"""


def test_the_switched_off_modules_can_be_stubbed_in_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest(SWITCHED_OFF)))
    (tmp_path / "sitecustomize.py").write_text(
        "from course_grading.core.torch_stubs import install\n\ninstall()\n"
    )
    env = {
        **os.environ,
        "COURSE_TORCH_STUBS": str(tmp_path / "manifest.json"),
        "PYTHONPATH": f"{tmp_path}:{REPO / 'autograder'}",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", STUB_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
