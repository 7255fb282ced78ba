"""Week 6 without nbgrader: the bandwidth helpers, the benchmark script, and the grading cases
(every catalogued mistake must be caught by some case, and the correct versions by none)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from course_grading.core.compare import first_difference
from course_grading.core.mistakes import rule_optimizer
from course_grading.core.references import digit_batches as batches
from course_grading.core.runs import run_case
from course_grading.week06 import cases
from course_grading.week06 import produce as runs
from course_grading.week06.checks import ADAMW_DEFAULTS
from course_grading.week06.mistakes import (
    FLAT_ADAMW_MISTAKES,
    LOSS_SCALER_MISTAKES,
    MASTER_WEIGHTS_MISTAKES,
    _Master,
    _Scaler,
)

from optlab import bandwidth

REPO = Path(__file__).resolve().parent.parent
SCALER_CASES = [c for group in cases.SCALER_CASES.values() for c in group]
MASTER_CASES = [c for group in cases.MASTER_CASES.values() for c in group]
FLAT_CASES = [c for group in cases.FLAT_CASES.values() for c in group]


def _benchmark():
    path = REPO / "benchmarks" / "optimizer_step_bandwidth.py"
    spec = importlib.util.spec_from_file_location("optimizer_step_bandwidth", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- optlab.bandwidth ----------------------------------------------------------------------


def test_parameter_set_splits_the_parameters_and_gives_each_a_gradient() -> None:
    params = bandwidth.parameter_set(1003, 10)
    assert len(params) == 10 and sum(p.numel() for p in params) == 1003
    assert all(p.requires_grad and p.grad is not None and p.grad.shape == p.shape for p in params)
    with pytest.raises(ValueError):
        bandwidth.parameter_set(5, 6)


def test_timing_and_bandwidth_helpers() -> None:
    calls = []
    seconds = bandwidth.time_callable(lambda: calls.append(1), warmup=2, repeats=3)
    assert seconds >= 0 and len(calls) == 5
    assert bandwidth.gbps(2e9, 0.5) == 4.0
    assert bandwidth.format_gbps(1234.4) == "1,234 GB/s"
    assert bandwidth.format_gbps(12.34) == "12.3 GB/s"
    assert bandwidth.copy_bandwidth(10_000, repeats=2) > 0
    table = bandwidth.format_table([["a", 1], ["bbb", 22]], ["name", "n"]).splitlines()
    assert table == ["name  n", "----  --", "a     1", "bbb   22"]


# --- benchmarks/optimizer_step_bandwidth.py ------------------------------------------------


def test_benchmark_flat_step_is_torch_adamw() -> None:
    bench = _benchmark()
    params = bandwidth.parameter_set(300, 7, dtype=torch.float64)
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    for twin, p in zip(twins, params, strict=True):
        twin.grad = p.grad.clone()
    state = bench.FlatState(params)
    opt = torch.optim.AdamW(twins, **bench.HYPER)
    for _ in range(5):
        bench.adamw_on_flat_buffers(state)
        opt.step()
    expected = torch.cat([t.detach().reshape(-1) for t in twins])
    assert torch.allclose(state.param, expected, rtol=1e-12, atol=1e-14)


def test_benchmark_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _benchmark()
    assert (
        bench.main(
            ["--device", "cpu", "--params", "20000", "--tensors", "4", "40", "--repeats", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    for column in ("device", "n params", "n tensors", "variant", "ms/step", "GB/s", "% of copy"):
        assert column in out
    assert out.count("flat buffers, AdamW in torch ops") == 2
    assert "device copy" in out


# --- grading cases -------------------------------------------------------------------------


def _scaler_differs(factory: type, case: runs.ScalerCase, reference: runs.ScalerRun) -> bool:
    run = runs.run_scaler(factory, case)
    return (
        run.scales != reference.scales
        or run.stepped != reference.stepped
        or any(
            not torch.allclose(a[k], b[k], equal_nan=True)
            for a, b in zip(run.params, reference.params, strict=True)
            for k in b
        )
    )


@pytest.fixture(scope="module")
def scaler_references() -> dict[str, runs.ScalerRun]:
    with runs.one_thread():
        return {c.name: runs.run_scaler(cases.grad_scaler, c) for c in SCALER_CASES}


def test_the_scaler_cases_overflow_skip_and_grow(scaler_references: dict) -> None:
    for case in SCALER_CASES:
        ref = scaler_references[case.name]
        if case.kwargs.get("enabled", True):
            assert not all(ref.stepped), f"{case.name}: no step was skipped"
    growth = scaler_references["growth every 3 clean steps"].scales
    assert any(b > a for a, b in zip(growth, growth[1:], strict=False)), "the scale never grew"


def test_a_correct_scaler_matches_grad_scaler_on_every_case(scaler_references: dict) -> None:
    with runs.one_thread():
        for case in SCALER_CASES:
            assert not _scaler_differs(_Scaler, case, scaler_references[case.name]), case.name


@pytest.mark.parametrize("mistake", LOSS_SCALER_MISTAKES, ids=lambda m: m.id)
def test_every_scaler_mistake_is_caught(mistake, scaler_references: dict) -> None:
    with runs.one_thread():
        assert any(
            _scaler_differs(mistake.factory, c, scaler_references[c.name]) for c in SCALER_CASES
        ), f"{mistake.id} passes every case"


def _master_same(a: runs.MasterRun, b: runs.MasterRun) -> bool:
    return all(
        torch.equal(x[k], y[k])
        for xs, ys in ((a.params, b.params), (a.masters, b.masters))
        for x, y in zip(xs, ys, strict=True)
        for k in y
    )


def test_master_mistakes_are_caught_and_the_correct_wrapper_is_not() -> None:
    with runs.one_thread():
        refs = {c.name: runs.run_master(cases.ReferenceMaster, c) for c in MASTER_CASES}
        for case in MASTER_CASES:
            assert _master_same(runs.run_master(_Master, case), refs[case.name]), case.name
        for mistake in MASTER_WEIGHTS_MISTAKES:
            assert not all(
                _master_same(runs.run_master(mistake.factory, c), refs[c.name])
                for c in MASTER_CASES
            ), f"{mistake.id} passes every case"


def test_pure_bf16_stalls_where_master_weights_move() -> None:
    case = runs.MasterCase("stall", "SGD", {"lr": 0.002}, steps=40)
    wrong = next(m for m in MASTER_WEIGHTS_MISTAKES if m.id.endswith("steps_low_precision"))
    with runs.one_thread():
        master = runs.run_master(cases.ReferenceMaster, case)
        pure = runs.run_master(wrong.factory, case)
    start = runs.master_model(case)
    moved = {
        name: sum(
            int((run.params[-1][n] != p.detach().float()).sum())
            for n, p in start.named_parameters()
        )
        for name, run in (("master", master), ("pure", pure))
    }
    assert moved["pure"] < moved["master"] / 2


def test_flat_adamw_mistakes_differ_from_torch() -> None:
    data = batches()
    for mistake in FLAT_ADAMW_MISTAKES:
        assert any(
            first_difference(
                run_case(rule_optimizer(mistake.rule, ADAMW_DEFAULTS), c, data),
                run_case(torch.optim.AdamW, c, data),
            )
            is not None
            for c in FLAT_CASES[:2]
        ), f"{mistake.id} passes"


def test_the_flat_cases_cover_every_adamw_option() -> None:
    options = {k for c in FLAT_CASES for k in c.kwargs}
    assert {"lr", "weight_decay", "betas", "eps", "maximize", "amsgrad"} <= options
    assert any(c.frozen for c in FLAT_CASES) and any(c.groups for c in FLAT_CASES)
    assert math.isclose(ADAMW_DEFAULTS["weight_decay"], 1e-2)


# --- what the student's code may not call while it is checked --------------------------------


def test_a_flat_adamw_that_steps_torch_optim_is_refused() -> None:
    from course_grading.core.local import run_check

    class FlatAdamW(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                     amsgrad=False, *, maximize=False):  # fmt: skip
            params = list(params)
            super().__init__(params, {"lr": lr})
            self.inner = torch.optim.AdamW(params, lr, betas, eps, weight_decay, amsgrad)

        def step(self, closure=None):
            return self.inner.step(closure)

    message = run_check("week06_mixed_precision", "flat_adamw_test_basic", FlatAdamW)
    assert message == (
        "`FlatAdamW` called torch.optim.AdamW.step: the update must be your own code, "
        "not torch.optim's."
    )
    # torch.optim works again once the check is over.
    w = torch.ones(2, requires_grad=True)
    w.grad = torch.ones(2)
    torch.optim.AdamW([w], lr=0.1).step()
    assert torch.all(w < 1)


def test_a_loss_scaler_that_calls_grad_scaler_kernels_is_refused() -> None:
    from course_grading.core.local import run_check

    class LossScaler(_Scaler):
        def update(self) -> None:
            torch._amp_update_scale_(
                torch.tensor(1.0),
                torch.tensor(0, dtype=torch.int32),
                torch.tensor(0.0),
                2.0,
                0.5,
                9,
            )

    message = run_check("week06_mixed_precision", "loss_scaler_test_skip", LossScaler)
    assert message == (
        "LossScaler called torch._amp_update_scale_: the scaler must be your own code."
    )
    # The kernel is back once the check is over.
    assert torch._amp_update_scale_.__name__ == "_amp_update_scale_"


def test_a_class_that_extends_torch_adamw_keeps_its_step_after_the_check() -> None:
    from course_grading.core.local import run_check

    class FlatAdamW(torch.optim.AdamW):
        pass

    message = run_check("week06_mixed_precision", "flat_adamw_test_basic", FlatAdamW)
    assert message is not None and "is, or extends, torch.optim.AdamW" in message
    w = torch.ones(2, requires_grad=True)
    w.grad = torch.ones(2)
    FlatAdamW([w], lr=0.1).step()  # the step switched off during the check is back
    assert torch.all(w < 1)
