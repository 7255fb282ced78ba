"""Week 5's helpers: the schedule widget, TensorBoard tracking, and the grading references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from optlab.schedules_widget import ScheduleExplorer, schedule_curve, update_artists
from optlab.tracking import Run, read_runs, session_log_dir, tensorboard_command


def warmup_cosine(step: int, *, peak_lr: float, final_lr: float, warmup_steps: int,
                  total_steps: int) -> float:  # fmt: skip
    if step < warmup_steps:
        return peak_lr * (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return final_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final_lr + (peak_lr - final_lr) * (1 + math.cos(math.pi * progress)) / 2


def xy(line) -> np.ndarray:
    x, y = line.get_data()
    return np.column_stack([np.asarray(x, float), np.asarray(y, float)])


# --- the schedule widget -----------------------------------------------------------------------


def test_schedule_curve_calls_the_schedule_with_the_slider_values() -> None:
    values = {"warmup_steps": 10, "peak_lr": 0.5, "final_lr": 0.05}
    steps, lrs = schedule_curve(warmup_cosine, values, total_steps=100)
    assert steps[0] == 0 and steps[-1] > 100  # a tail after total_steps
    assert lrs[10] == pytest.approx(0.5)
    assert lrs[100] == pytest.approx(0.05)
    assert np.all(lrs[101:] == pytest.approx(0.05))


def test_update_artists_is_a_plain_function_that_moves_the_artists() -> None:
    explorer = ScheduleExplorer(warmup_cosine, total_steps=50)
    values = {"warmup_steps": 5, "peak_lr": 0.8, "final_lr": 0.2}
    steps, lrs = schedule_curve(warmup_cosine, values, 50)
    update_artists(explorer.artists, steps, lrs, values, 50)
    np.testing.assert_allclose(xy(explorer.artists.curve), np.column_stack([steps, lrs]))
    assert list(explorer.artists.warmup_end.get_xdata()) == [5.0, 5.0]
    assert list(explorer.artists.peak.get_ydata()) == [0.8, 0.8]
    assert list(explorer.artists.final.get_ydata()) == [0.2, 0.2]
    assert explorer.ax.get_ylim()[1] >= 0.8


def test_moving_a_slider_updates_the_existing_curve() -> None:
    explorer = ScheduleExplorer(warmup_cosine, total_steps=80, values={"warmup_steps": 0})
    curve = explorer.artists.curve
    lines_before = len(explorer.ax.lines)
    before = xy(curve)
    explorer.sliders["warmup_steps"].value = 20
    after = xy(curve)
    assert explorer.artists.curve is curve and len(explorer.ax.lines) == lines_before
    assert not np.allclose(before, after)
    assert after[20, 1] == pytest.approx(explorer.values["peak_lr"])
    explorer.sliders["peak_lr"].value = 0.9
    assert xy(curve)[20, 1] == pytest.approx(0.9)
    explorer.sliders["final_lr"].value = 0.3
    assert xy(curve)[80, 1] == pytest.approx(0.3)


def test_warmup_slider_stays_below_total_steps() -> None:
    explorer = ScheduleExplorer(warmup_cosine, total_steps=30)
    assert explorer.sliders["warmup_steps"].max == 29
    with pytest.raises(ValueError, match="total_steps"):
        ScheduleExplorer(warmup_cosine, total_steps=0)


# --- TensorBoard tracking ----------------------------------------------------------------------


def test_runs_written_offline_are_read_back(tmp_path: Path) -> None:
    for lr in (0.1, 0.3):
        with Run(f"lr{lr}", {"lr": lr, "batch_size": 32, "optimizer": "sgd"}, tmp_path) as run:
            for step in range(5):
                run.log(step, {"loss/train": 1.0 / (step + 1) + lr})
            run.log(4, {"loss/val": 2 * lr})
            run.finish(val_loss=2 * lr)
    records = read_runs(tmp_path)
    assert [r.name for r in records] == ["lr0.1", "lr0.3"]
    first = records[0]
    assert first.hparams == {"lr": pytest.approx(0.1), "batch_size": 32, "optimizer": "sgd"}
    steps, values = first.series("loss/train")
    assert list(steps) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(values, [1.0 / (s + 1) + 0.1 for s in range(5)], rtol=1e-6)
    assert records[1].last("loss/val") == pytest.approx(0.6)
    assert records[1].last("final/val_loss") == pytest.approx(0.6)
    with pytest.raises(KeyError, match="no scalar"):
        first.series("accuracy")


def test_a_run_started_again_replaces_the_old_one(tmp_path: Path) -> None:
    for value in (1.0, 2.0):
        with Run("same", {"lr": 0.1}, tmp_path) as run:
            run.log(0, {"loss": value})
            run.finish(loss=value)
    (record,) = read_runs(tmp_path)
    assert list(record.series("loss")[1]) == [2.0]


def test_unfinished_runs_have_no_hparams_and_odd_names_are_refused(tmp_path: Path) -> None:
    with Run("open", {"lr": 0.1}, tmp_path) as run:
        run.log(0, {"loss": 1.0})
    (record,) = read_runs(tmp_path)
    assert record.hparams == {}
    with pytest.raises(ValueError, match="plain folder name"):
        Run("a/b", {}, tmp_path)
    with pytest.raises(FileNotFoundError):
        read_runs(tmp_path / "missing")
    assert tensorboard_command("runs/week05") == "tensorboard --logdir runs/week05"


def test_session_log_dirs_are_fresh_and_outside_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTLAB_RUNS", str(tmp_path / "all-runs"))
    first, second = session_log_dir("week05"), session_log_dir("week05")
    assert first != second and first.parent == second.parent == tmp_path / "all-runs"
    assert first.name.startswith("week05-") and not any(first.iterdir())
    assert session_log_dir("x", root=tmp_path / "mine").parent == tmp_path / "mine"


# --- the grading references --------------------------------------------------------------------

WEEK = "week05_recipe"


def _reference(grade_id: str, part: int = -1) -> tuple[list, list]:
    """A hidden check's reference, as the trusted side computes it, and the part's cases."""
    from course_grading.core.checks import plan

    check = plan(WEEK)[grade_id][part]
    return check.expected, check.context.get("cases", [])


def test_the_week05_references_come_from_torch() -> None:
    from course_grading.week05 import cases

    reference, decay_cases = _reference("warmup_cosine_lr_test_full")
    assert decay_cases == list(cases.DECAY_CASES)
    for case, got in zip(decay_cases, reference, strict=True):
        expected = [warmup_cosine(s, **case) for s in range(case["total_steps"] + 1)]
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    direct = cases.init_std(cases.KAIMING_CASES[0])
    assert direct == pytest.approx(math.sqrt(2) / 20, rel=1e-12)
    reference, clip_cases = _reference("clip_grad_norm_test_nonfinite")
    clip = {case["name"]: ref for case, ref in zip(clip_cases, reference, strict=True)}
    inf_case = clip["a gradient containing inf, error_if_nonfinite=True"]
    assert "non-finite" in inf_case["error"]
    nan_case = clip["a gradient containing NaN"]
    assert math.isnan(nan_case["total"]) and all(torch.isnan(g).all() for g in nan_case["grads"])


def test_the_solution_passes_and_catalogued_mistakes_are_named() -> None:
    from course_grading.core.local import run_check
    from course_grading.week05.mistakes import clip

    assert run_check(WEEK, "clip_grad_norm_test_basic", clip()) is None
    assert run_check(WEEK, "clip_grad_norm_test_options", clip()) is None
    assert run_check(WEEK, "clip_grad_norm_test_nonfinite", clip()) is None
    assert "global norm" in run_check(WEEK, "clip_grad_norm_test_basic", clip(per_tensor=True))
    message = run_check(WEEK, "clip_grad_norm_test_nonfinite", clip(raise_errors=False))
    assert "error_if_nonfinite=True must raise" in message


def _step_lr(step: int, lr: float, step_size: int, gamma: float = 0.1) -> float:
    return lr * gamma ** (step // step_size)


def test_step_lr_passes_and_each_catalogued_mistake_is_named() -> None:
    from course_grading.core.local import run_check
    from course_grading.week05.mistakes import STEP_LR_MISTAKES

    assert run_check(WEEK, "step_lr_test", _step_lr) is None
    assert len(STEP_LR_MISTAKES) >= 5
    for mistake in STEP_LR_MISTAKES:

        def wrong(step, lr, step_size, gamma=0.1, rule=mistake.rule):
            return rule(step, lr, step_size, gamma)

        message = run_check(WEEK, "step_lr_test", wrong)
        assert message is not None and mistake.sentence in message, mistake.id


def test_real_torch_is_refused_inside_the_checks() -> None:
    """torch's schedulers are refused while the check runs the student's code.

    (torch.nn.utils.clip_grad is switched off in the sandbox as a whole: the pipeline's
    wrong answer clip_calls_torch shows that.)
    """
    from course_grading.core.local import run_check

    def step_lr_by_torch(step: int, *, lr: float, step_size: int, gamma: float = 0.1) -> float:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        torch.optim.lr_scheduler.StepLR(opt, step_size, gamma)
        return _step_lr(step, lr, step_size, gamma)

    assert "write the schedule yourself" in run_check(WEEK, "step_lr_test", step_lr_by_torch)
    message = run_check(WEEK, "lambda_schedule_test_basic", torch.optim.lr_scheduler.LambdaLR)
    assert "extends a torch.optim.lr_scheduler" in message
