"""Week 7 (ZeRO-1): the process launcher, the memory calculator, and the hidden checks.

The checks run the solution's module (taken from the source notebook) and the typical wrong
versions in tests/submissions/week07_zero on several processes, on free ports, with timeouts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from course_fixture import wrong_answer, wrong_answer_files

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
    from course_grading.week07 import zero_bytes

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


def test_memory_check_accepts_the_formula_and_names_each_mistake() -> None:
    from course_grading import week07
    from course_grading.compare import CheckFailed

    week07.check_model_state_memory(week07.zero_bytes)
    for mistake in week07.MODEL_STATE_MEMORY_MISTAKES:
        with pytest.raises(CheckFailed, match=re.escape(mistake.sentence)):
            week07.check_model_state_memory(mistake.rule)


def test_memory_validation_check() -> None:
    from course_grading import week07
    from course_grading.compare import CheckFailed

    with pytest.raises(CheckFailed, match="should raise ValueError"):
        week07.check_model_state_memory_validation(week07.zero_bytes)


def test_the_notebook_solution_passes_every_zero1_check(solution: Path) -> None:
    from course_grading import week07

    week07.check_partition(solution)
    week07.check_zero1_step(solution)
    week07.check_zero1_models(solution)
    week07.check_zero1_world_sizes(solution)
    week07.check_zero1_memory(solution)
    week07.check_zero1_state_dict(solution)


@pytest.mark.parametrize(
    ("shards", "phrase"),
    [
        (lambda ps, n: [ps[r::n] for r in range(n)], "too uneven"),
        (lambda ps, n: [list(ps)] * n if n > 1 else [list(ps)], "the shards overlap"),
        (lambda ps, n: [list(ps)[1:]] + [[] for _ in range(n - 1)], "is in no shard"),
        (lambda ps, n: [[p.clone() for p in ps]] + [[] for _ in range(n - 1)], "not copies"),
    ],
)
def test_partition_check_rejects(tmp_path: Path, shards: object, phrase: str) -> None:
    from course_grading import week07
    from course_grading.compare import CheckFailed

    class Module:
        partition_parameters = staticmethod(shards)

    week07_load = week07._load
    try:
        week07._load = lambda _path: Module  # type: ignore[assignment]
        with pytest.raises(CheckFailed, match=phrase):
            week07.check_partition(tmp_path / "zero1.py")
    finally:
        week07._load = week07_load


# Which check names each typical wrong version (the pipeline test grades them all).
NAMED_BY = {
    "broadcast_from_rank_zero": "check_zero1_step",
    "local_state_dict": "check_zero1_state_dict",
    "not_synced_back": "check_zero1_step",
    "shards_miss_parameters": "check_zero1_world_sizes",
    "state_for_all_parameters": "check_zero1_memory",
    "summed_gradients": "check_zero1_step",
    "updates_all_parameters": "check_zero1_memory",
    "uses_torch_zero": "check_zero1_step",
}


@pytest.mark.parametrize("name", sorted(NAMED_BY))
def test_each_wrong_version_fails_with_its_message(tmp_path: Path, name: str) -> None:
    from course_grading import week07
    from course_grading.compare import CheckFailed

    solution = json.loads(SOLUTIONS.read_text())
    _, expect, source = wrong_answer(SUBMISSIONS / f"{name}.diff", solution)
    module = _module_from_cell(source, tmp_path)
    with pytest.raises(CheckFailed) as info:
        getattr(week07, NAMED_BY[name])(module)
    assert expect in str(info.value)


def test_every_wrong_version_is_listed() -> None:
    files = wrong_answer_files(SUBMISSIONS)
    zero1 = {p.stem for p in files if "grade_id: zero1" in p.read_text()}
    assert zero1 == set(NAMED_BY)


def test_a_missing_module_file_is_reported(tmp_path: Path) -> None:
    from course_grading import week07
    from course_grading.compare import CheckFailed

    with pytest.raises(CheckFailed, match="run the %%writefile cell"):
        week07.check_zero1_step(tmp_path / "zero1.py")


def test_a_hanging_submission_is_stopped(tmp_path: Path, solution: Path) -> None:
    from course_grading import week07
    from course_grading.compare import CheckFailed

    text = solution.read_text().replace(
        "                dist.broadcast(p, src=owner)",
        "                if self.rank == owner:\n                    dist.broadcast(p, src=owner)",
    )
    assert text != solution.read_text()
    hanging = tmp_path / "zero1.py"
    hanging.write_text(text)
    saved = week07.LAUNCH_TIMEOUT_S
    week07.LAUNCH_TIMEOUT_S = 5
    try:
        with pytest.raises(CheckFailed) as info:
            week07.check_zero1_step(hanging)
    finally:
        week07.LAUNCH_TIMEOUT_S = saved
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
