"""Week 7 (ZeRO-1): the process launcher, the memory calculator, and the hidden checks.

The checks run the solution's module (taken from the source notebook) and the typical wrong
versions in tests/submissions/week07_zero on several processes, on free ports, with timeouts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from course_fixture import wrong_answer, wrong_answer_files
from course_grading.core.checks import CheckFailed
from course_grading.core.harness import produce
from course_grading.core.local import check_here, run_check
from course_grading.core.torch_hiding import manifest
from course_grading.week07 import checks as week07_checks
from course_grading.week07 import produce as week07_produce
from course_grading.week07.cases import FIGURE_1, STEP_CASES, zero_bytes
from course_grading.week07.mistakes import MODEL_STATE_MEMORY_MISTAKES

from optlab import launch as launch_module
from optlab.collectives import holdings
from optlab.launch import LaunchError, LaunchTimeout, launch, plan_devices
from optlab.zero_memory import MemoryCalculator, memory_gb, update_memory_artists

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "source" / "week07_zero" / "week07_zero.ipynb"
SOLUTIONS = REPO / "solutions" / "week07_zero" / "week07_zero.ipynb"
SUBMISSIONS = Path(__file__).resolve().parent / "submissions" / "week07_zero"

WORKERS = """
import os
import time

import torch
import torch.distributed as dist


def rank_sum(offset):
    t = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(t)
    return {"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": t.item() + offset}


def fail_on_one():
    if dist.get_rank() == 1:
        raise ValueError("rank one is broken")
    dist.all_reduce(torch.zeros(1))


def wait_forever():
    if dist.get_rank() == 0:
        dist.all_reduce(torch.zeros(1))
    else:
        time.sleep(60)


def which_device():
    return os.environ.get("OPTLAB_DEVICE")
"""


def _cell(nb_path: Path, cell_id: str) -> str:
    nb = json.loads(nb_path.read_text())
    (cell,) = [c for c in nb["cells"] if c.get("id") == cell_id]
    return "".join(cell["source"])


def _module_from_cell(source: str, folder: Path, name: str = "zero1.py") -> Path:
    """What the %%writefile cell writes: the cell without its first line and solution markers."""
    lines = source.splitlines()
    assert lines[0].startswith("%%writefile")
    body = [
        ln for ln in lines[1:] if "### BEGIN SOLUTION" not in ln and "### END SOLUTION" not in ln
    ]
    path = folder / name
    path.write_text("\n".join(body) + "\n")
    return path


@pytest.fixture(scope="module")
def solution(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _module_from_cell(_cell(SOURCE, "zero1"), tmp_path_factory.mktemp("solution"))


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workers") / "workers.py"
    path.write_text(WORKERS)
    return path


# --- the launcher ------------------------------------------------------------------------------


def test_launch_returns_every_ranks_value(workers: Path) -> None:
    results = launch(workers, "rank_sum", 3, args=(0.5,))
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert all(r["world"] == 3 and r["sum"] == 3.5 for r in results)


def test_a_failing_rank_is_reported_with_its_traceback(workers: Path) -> None:
    with pytest.raises(LaunchError) as info:
        launch(workers, "fail_on_one", 3, timeout=30)
    assert info.value.rank == 1
    assert "rank one is broken" in str(info.value)
    assert 'workers.py", line' in str(info.value)
    assert info.value.error == "ValueError: rank one is broken"


def test_a_hanging_job_times_out_and_says_where(workers: Path) -> None:
    with pytest.raises(LaunchTimeout) as info:
        launch(workers, "wait_forever", 2, timeout=4)
    message = str(info.value)
    assert "did not finish within 4 s" in message
    assert "workers.py, line" in message  # where the ranks were waiting


def test_parallel_launches_use_different_ports(workers: Path) -> None:
    results: dict[int, list] = {}

    def run(i: int) -> None:
        results[i] = launch(workers, "rank_sum", 2, args=(float(i),), timeout=60)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: [r["sum"] for r in rs] for i, rs in results.items()} == {
        i: [1.0 + i, 1.0 + i] for i in range(3)
    }


def test_each_rank_in_its_own_interpreter_works_too(
    workers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTLAB_LAUNCH_SPAWN", "1")  # the path taken where fork is unavailable
    assert [r["sum"] for r in launch(workers, "rank_sum", 2, args=(0.0,), timeout=120)] == [1, 1]


def test_device_plans(monkeypatch: pytest.MonkeyPatch, workers: Path) -> None:
    assert plan_devices(3, "cpu").backend == "gloo"
    assert launch(workers, "which_device", 2) == ["cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert plan_devices(2, "auto") == launch_module.DevicePlan("nccl", ("cuda:0", "cuda:1"))
    # More ranks than GPUs: NCCL refuses two ranks on one GPU, so they share them over gloo.
    assert plan_devices(3, "cuda") == launch_module.DevicePlan(
        "gloo", ("cuda:0", "cuda:1", "cuda:0")
    )
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(RuntimeError):
        plan_devices(2, "cuda")


# --- the calculator and the pictures -----------------------------------------------------------


def reference_bytes(n_params: float, n_devices: int, stage: int, k: float = 12) -> float:
    return zero_bytes(n_params, n_devices, stage, k)


def test_memory_gb_reproduces_figure_1() -> None:
    got = memory_gb(reference_bytes, 7.5e9, 64, 12)
    assert [round(v, 1) for v in got] == [120.0, 31.4, 16.6, 1.9]


def test_moving_a_slider_updates_the_bars() -> None:
    calc = MemoryCalculator(reference_bytes)
    heights = [b.get_height() for b in calc.artists.bars.patches]
    assert heights == pytest.approx([120.0, 31.40625, 16.640625, 1.875])
    calc.sliders["n_devices"].value = 1
    assert [b.get_height() for b in calc.artists.bars.patches] == pytest.approx([120.0] * 4)
    calc.sliders["k"].value = 4
    assert calc.artists.bars.patches[0].get_height() == pytest.approx(60.0)
    assert calc.artists.labels[0].get_text() == "60.0 GB"
    calc.sliders["n_devices"].value = 1024
    assert list(calc.artists.marker.get_xdata()) == [1024, 1024]
    assert calc.artists.curves[3].get_ydata()[-1] == pytest.approx(8 * 7.5 / 1024)


def test_update_function_uses_the_given_formula() -> None:
    calc = MemoryCalculator(reference_bytes)
    values = update_memory_artists(calc.artists, lambda *a, **k: 2e9, 1e9, 8, 12)
    assert values == [2.0] * 4
    assert [b.get_height() for b in calc.artists.bars.patches] == [2.0] * 4


def test_holdings_places_pieces_in_their_columns() -> None:
    grid = holdings([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], 4)
    assert grid[0, :2].tolist() == [1.0, 2.0] and grid[1, 2:].tolist() == [3.0, 4.0]
    assert torch.isnan(torch.tensor(grid[0, 2:])).all()


# --- the hidden checks ---------------------------------------------------------------------

WEEK = "week07_zero"


def test_memory_check_accepts_the_formula_and_names_each_mistake() -> None:
    assert run_check(WEEK, "model_state_memory_test_figure", zero_bytes) is None
    for mistake in MODEL_STATE_MEMORY_MISTAKES:
        with pytest.raises(CheckFailed, match=re.escape(mistake.sentence)):
            check_here("model_state_memory_test_figure", mistake.rule)


def test_the_formula_gives_the_papers_figure_1() -> None:
    assert {stage: zero_bytes(7.5e9, 64, stage) for stage in range(4)} == FIGURE_1


def test_memory_validation_check() -> None:
    with pytest.raises(CheckFailed, match="should raise ValueError"):
        check_here("model_state_memory_test_validation", zero_bytes)


def test_the_notebook_solution_passes_every_zero1_check(solution: Path) -> None:
    for grade_id in (
        "zero1_test_partition",
        "zero1_test_step",
        "zero1_test_models",
        "zero1_test_world_sizes",
        "zero1_test_memory",
        "zero1_test_state_dict",
    ):
        assert run_check(WEEK, grade_id, solution) is None, grade_id


@pytest.mark.parametrize(
    ("shards", "phrase"),
    [
        (lambda ps, n: [ps[r::n] for r in range(n)], "too uneven"),
        (lambda ps, n: [list(ps)] * n if n > 1 else [list(ps)], "the shards overlap"),
        (lambda ps, n: [list(ps)[1:]] + [[] for _ in range(n - 1)], "is in no shard"),
        (lambda ps, n: [[p.clone() for p in ps]] + [[] for _ in range(n - 1)], "not copies"),
    ],
)
def test_partition_check_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards: object, phrase: str
) -> None:
    class Module:
        partition_parameters = staticmethod(shards)

    monkeypatch.setattr(week07_produce, "_load", lambda _path: (Module, None))
    with pytest.raises(CheckFailed, match=phrase):
        check_here("zero1_test_partition", tmp_path / "zero1.py")


# Which test cell names each typical wrong version (the pipeline test grades them all).
NAMED_BY = {
    "broadcast_from_rank_zero": "zero1_test_step",
    "local_state_dict": "zero1_test_state_dict",
    "not_synced_back": "zero1_test_step",
    "shards_miss_parameters": "zero1_test_world_sizes",
    "state_for_all_parameters": "zero1_test_memory",
    "summed_gradients": "zero1_test_step",
    "updates_all_parameters": "zero1_test_memory",
    "uses_torch_zero": "zero1_test_step",
}
# Wrong versions that call what the sandbox switches off: checked with the week's stubs on.
NEEDS_STUBS = {"uses_torch_zero"}


@pytest.mark.parametrize("name", sorted(NAMED_BY))
def test_each_wrong_version_fails_with_its_message(tmp_path: Path, name: str) -> None:
    solution = json.loads(SOLUTIONS.read_text())
    _, expect, source = wrong_answer(SUBMISSIONS / f"{name}.diff", solution)
    module = _module_from_cell(source, tmp_path)
    if name in NEEDS_STUBS:
        message = _verdict_with_stubs(tmp_path, NAMED_BY[name], module)
    else:
        message = run_check(WEEK, NAMED_BY[name], module)
    assert message is not None and expect in message, message


def _verdict_with_stubs(tmp_path: Path, grade_id: str, module: Path) -> str | None:
    """The verdict of ``grade_id`` computed in a process (and ranks) with Week 7's stubs on."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "manifest.json").write_text(json.dumps(manifest(week07_checks.HIDDEN_TORCH)))
    (stubs / "sitecustomize.py").write_text(
        "from course_grading.core.torch_stubs import install\n\ninstall()\n"
    )
    grading = Path(week07_checks.__file__).resolve().parents[2]
    script = (
        "import json, sys\n"
        "from course_grading.core.local import run_check\n"
        "if __name__ == '__main__':\n"
        f"    print(json.dumps(run_check({WEEK!r}, {grade_id!r}, {str(module)!r})))\n"
    )
    (tmp_path / "verdict.py").write_text(script)
    env = {
        **os.environ,
        "COURSE_TORCH_STUBS": str(stubs / "manifest.json"),
        "PYTHONPATH": os.pathsep.join([str(stubs), str(grading), str(REPO)]),
    }
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "verdict.py")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_wrong_version_is_listed() -> None:
    files = wrong_answer_files(SUBMISSIONS)
    zero1 = {p.stem for p in files if "grade_id: zero1" in p.read_text()}
    assert zero1 == set(NAMED_BY)


def test_a_state_dict_torch_cannot_load_fails_the_check() -> None:
    """The judge loads rank 0's state dict into torch.optim.AdamW (its methods unwrapped from
    torch's compile guards): what torch refuses fails the check with torch's reason."""
    case = week07_checks.STATE_DICT_CASE
    model = week07_checks.make_model(case)
    optimizer = torch.optim.AdamW(week07_checks.optimizer_params(model, case), **case.kwargs)
    state_dict = optimizer.state_dict()
    state_dict["param_groups"] = state_dict["param_groups"][:1]
    with pytest.raises(CheckFailed, match="different number of parameter groups"):
        week07_checks._check_loadable(state_dict)


def test_a_missing_module_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match="run the %%writefile cell"):
        check_here("zero1_test_step", tmp_path / "zero1.py")


def test_a_hanging_submission_is_stopped(tmp_path: Path, solution: Path) -> None:
    text = solution.read_text().replace(
        "                dist.broadcast(p, src=owner)",
        "                if self.rank == owner:\n                    dist.broadcast(p, src=owner)",
    )
    assert text != solution.read_text()
    hanging = tmp_path / "zero1.py"
    hanging.write_text(text)
    # zero1_test_step's check, stopped after 5 s instead of the usual time.
    part = week07_checks.zero1_runs(2, STEP_CASES, timeout=5)
    with pytest.raises(CheckFailed) as info:
        part.judge(part, produce(part.request(), (hanging,)))
    assert "did not finish within 5 s" in str(info.value)
    assert "was waiting at zero1.py, line" in str(info.value)


# --- the benchmark script ----------------------------------------------------------------------


def test_benchmark_script_prints_the_table(solution: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "zero1_memory_time.py"),
            "--zero1", str(solution), "--width", "64", "--depth", "2", "--steps", "2",
        ],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "2 ranks, backend gloo, devices cpu"
    assert "torch" in lines[1] and "2 ranks" in lines[1]
    table = {line[:32].strip(): line[32:].split() for line in lines[3:]}
    assert set(table) == {
        "replicated (DDP-style)",
        "your ZeRO-1",
        "torch ZeroRedundancyOptimizer",
    }
    assert float(table["replicated (DDP-style)"][1]) == 1.0
    assert 0.4 < float(table["your ZeRO-1"][1]) < 0.6
    assert float(table["your ZeRO-1"][3]) < 1e-5  # same parameters as the replicated run
