"""optlab.zero_train: Week 7's ZeRO-1 under torchrun trains what the notebook's launch trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optlab.launch import launch
from optlab.zero_train import checksum, final_loss

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions" / "week07_zero" / "week07_zero.ipynb"
SGD = {"lr": 0.1, "momentum": 0.9}  # the notebook's first check, and zero_train's default


@pytest.fixture(scope="module")
def zero1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The solution's ZeRO-1 module: what the solution notebook's %%writefile cell writes."""
    cells = json.loads(SOLUTIONS.read_text())["cells"]
    (source,) = [
        "".join(cell["source"])
        for cell in cells
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "zero1"
    ]
    magic, _, body = source.partition("\n")
    assert magic.startswith("%%writefile")
    path = tmp_path_factory.mktemp("solution") / "zero1.py"
    path.write_text(body + "\n")
    return path


def _torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def test_torchrun_matches_the_notebooks_launch(zero1: Path, tmp_path: Path) -> None:
    saved = tmp_path / "torchrun.pt"
    proc = subprocess.run(
        [
            *_torchrun(), "--standalone", "--nproc-per-node", "2",
            "-m", "optlab.zero_train", "--zero1", str(zero1), "--device", "cpu",
            "--save", str(saved),
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"zero1.py, SGD {json.dumps(SGD)}, 5 steps: 2 ranks, backend gloo, cpu"

    # What the notebook runs: launch("optlab.zero_runs", "check_run", 2, ...).
    results = launch("optlab.zero_runs", "check_run", 2, args=(str(zero1), "SGD", SGD))
    notebook_loss = final_loss([r["losses"][-1] for r in results])
    printed_loss = float(lines[1].split()[2])
    assert printed_loss == pytest.approx(notebook_loss, rel=1e-12, abs=0)
    torchrun = torch.load(saved)["params"]
    assert set(torchrun) == set(results[0]["params"])
    for name, value in results[0]["params"].items():
        torch.testing.assert_close(torchrun[name], value, rtol=1e-12, atol=1e-14)
    assert lines[2].startswith("parameters: sum ")
    print("torchrun:", lines[2], "| launch:", checksum(results[0]["params"]))


def test_it_asks_for_torchrun_outside_it(zero1: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    proc = subprocess.run(
        [sys.executable, "-m", "optlab.zero_train", "--zero1", str(zero1)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "start it with torchrun" in proc.stderr
