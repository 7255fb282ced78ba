"""Week 4's helpers and grading code: the memory tool, the mistake catalogues, the hints."""

from __future__ import annotations

import pytest
import torch
from course_grading.core.compare import first_difference
from course_grading.core.mistakes import identify, rule_optimizer
from course_grading.core.references import TORCH_DEFAULTS, digit_batches
from course_grading.core.runs import run_case
from course_grading.week04 import cases as week04_cases
from course_grading.week04 import checks
from course_grading.week04.mistakes import ADAM_MISTAKES, ADAMW_MISTAKES
from torch import nn

from optlab.memory import format_bytes, measure_state, tensor_bytes

CATALOGUES = [
    ("Adam", week04_cases.ADAM_CASES, ADAM_MISTAKES, TORCH_DEFAULTS["Adam"]),
    ("AdamW", week04_cases.ADAMW_CASES, ADAMW_MISTAKES, TORCH_DEFAULTS["AdamW"]),
]


def _one_step(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    model(torch.ones(2, 4, dtype=next(model.parameters()).dtype)).sum().backward()
    optimizer.step()


def test_memory_measures_what_torch_adam_holds() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)).double()
    model[0].requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), amsgrad=True)
    _one_step(opt, model)
    records = {r.name: r for r in measure_state(opt, model)}
    assert records["0.weight"].total == 0 and records["0.weight"].entries == {}
    assert records["1.weight"].by_dtype == {"float64": 3 * 6 * 8, "float32": 4}
    assert records["1.bias"].total == 3 * 2 * 8 + 4
    assert records["1.bias"].numel == 2 and records["1.bias"].dtype == torch.float64
    assert "max_exp_avg_sq" in records["1.weight"].entries


def test_memory_counts_tensors_only_and_each_once() -> None:
    p = torch.zeros(5, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    shared = torch.zeros(5)
    opt.state[p] = {"step": 3, "buffer": shared, "again": shared, "nested": [torch.zeros(2)]}
    (record,) = measure_state(opt)
    assert record.name == "param 0"
    assert record.total == tensor_bytes(shared) + 8
    assert "no tensor" in record.entries["step"]


def test_format_bytes() -> None:
    assert format_bytes(56e9) == "56 GB"
    assert format_bytes(8004) == "8 kB"
    assert format_bytes(12) == "12 B"


@pytest.mark.parametrize("name, cases, mistakes, defaults", CATALOGUES, ids=["Adam", "AdamW"])
def test_every_mistake_is_caught_and_named(name, cases, mistakes, defaults) -> None:
    """Each catalogued mistake differs from torch on some checked case, and is named as itself."""
    assert len(mistakes) >= 6
    batches = digit_batches()
    all_cases = [case for table in cases.values() for case in table]
    torch_runs = [run_case(getattr(torch.optim, name), case, batches) for case in all_cases]
    for mistake in mistakes:
        wrong = rule_optimizer(mistake.rule, defaults)
        for case, expected in zip(all_cases, torch_runs, strict=True):
            run = run_case(wrong, case, batches)
            if first_difference(run, expected) is not None:
                named = identify(run, case, batches, mistakes, defaults)
                assert named is mistake, f"{mistake.id} is named {named and named.id}"
                break
        else:
            pytest.fail(f"{mistake.id} passes every case of the {name} checks")


def test_state_bytes_hints_name_the_missing_step() -> None:
    assert "step counter is missing" in checks._bytes_hint(8000, 8004, 1000, "float32", "Adam", {})
    assert "keeps no state" in checks._bytes_hint(4000, 0, 1000, "float32", "SGD", {})


def test_the_dip_preset_fits_the_sliders_and_decay_moves_adamw() -> None:
    from optlab.explorer import OptimizerSpec, TrajectoryExplorer
    from optlab.landscapes import DipCurve

    hyper = {"lr": "lr", "betas": ("beta1", "beta2"), "weight_decay": "weight_decay"}
    specs = [
        OptimizerSpec("Adam", torch.optim.Adam, hyper),
        OptimizerSpec("AdamW", torch.optim.AdamW, hyper),
    ]
    preset = {"lr": 3e-4, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1}
    explorer = TrajectoryExplorer(DipCurve(), specs, n_steps=50, values=preset)
    assert explorer.values == pytest.approx(preset)
    explorer.sliders["lr"].value = 0.1
    before = [t.path.copy() for t in explorer.trajectories]
    explorer.sliders["weight_decay"].value = 0.5
    after = [t.path for t in explorer.trajectories]
    assert all(not (a == b).all() for a, b in zip(before, after, strict=True))


def test_a_nan_difference_gets_the_step_counter_hint() -> None:
    message = "[default arguments] after step 1, parameter '0.weight'[0, 0] is nan with your"
    assert "increase the step counter" in checks.explain_nan(message)
    assert checks.explain_nan("is 0.5 with your optimizer") == "is 0.5 with your optimizer"


def test_state_bytes_that_measures_with_torch_optim_is_told_to_count() -> None:
    """In the sandbox, torch.optim's optimizers are switched off: measuring one fails clearly."""
    part = checks.state_bytes_torch()
    refused = {
        "type": "SwitchedOff",
        "message": "torch.optim.SGD is switched off while the course grades your notebook: ...",
        "value_error": False,
        "forbidden": None,
    }
    with pytest.raises(checks.CheckFailed, match="stepped a torch.optim optimizer to measure it"):
        part.judge(part, [{"error": refused}])


def test_state_bytes_must_return_a_plain_number() -> None:
    part = checks.state_bytes_torch()
    numpy_like = {"value": 0, "number": False, "text": "0", "repr": "np.int64(0)"}
    with pytest.raises(checks.CheckFailed, match=r"returned np.int64\(0\).*Return a number"):
        part.judge(part, [numpy_like])
