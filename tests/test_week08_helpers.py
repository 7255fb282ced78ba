"""Week 8's helpers: singular values, the Newton–Schulz polynomial and widget, the training race."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest
import torch

from optlab.newton_schulz_widget import (
    BAND,
    PRESETS,
    NewtonSchulzExplorer,
    newton_schulz_map,
    update_artists,
)
from optlab.orthogonal import (
    CLASSIC_COEFFICIENTS,
    MUON_COEFFICIENTS,
    iterate_polynomial,
    odd_polynomial,
    polar_factor,
    singular_values,
    top_share,
)
from optlab.training import RunRecord, best_run, plot_runs, sweep, train_run

matplotlib.use("Agg")


def xy(line) -> np.ndarray:
    x, y = line.get_data()
    return np.column_stack([np.asarray(x, float), np.asarray(y, float)])


# --- singular values and the polynomial -------------------------------------------------------


def test_singular_values_are_sorted_and_match_torch() -> None:
    G = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    sigma = singular_values(G)
    assert sigma.shape == (4,)
    assert np.all(np.diff(sigma) <= 0)
    np.testing.assert_allclose(sigma, torch.linalg.svdvals(G.double()).numpy())
    with pytest.raises(ValueError, match="matrix"):
        singular_values(torch.ones(3))


def test_polar_factor_is_orthogonal_and_keeps_the_directions() -> None:
    G = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    Q = polar_factor(G)
    np.testing.assert_allclose(Q @ Q.T, torch.eye(5, dtype=torch.float64), atol=1e-12)
    # Same singular vectors: Q^T G is symmetric positive semi-definite.
    S = Q.T @ G
    np.testing.assert_allclose(S, S.T, atol=1e-12)
    assert torch.linalg.eigvalsh(S).min() > -1e-10


def test_polar_factor_leaves_missing_directions_at_zero() -> None:
    u, v = torch.randn(6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    rank_one = torch.outer(u, v)
    np.testing.assert_allclose(singular_values(polar_factor(rank_one)), [1, 0, 0, 0], atol=1e-12)
    assert torch.equal(polar_factor(torch.zeros(3, 2)), torch.zeros(3, 2, dtype=torch.float64))


def test_top_share() -> None:
    np.testing.assert_allclose(top_share(np.array([1.0, 1.0, 1.0, 1.0])), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(top_share(np.array([0.0, 3.0, 4.0])), [0.64, 1.0, 1.0])


def test_odd_polynomial() -> None:
    np.testing.assert_allclose(odd_polynomial(np.array([0.0, 1.0]), MUON_COEFFICIENTS), [0, 0.701])
    np.testing.assert_allclose(
        odd_polynomial(np.array([-0.5, 0.5]), (1, 1, 1)), [-0.65625, 0.65625]
    )


def test_muon_coefficients_land_in_the_band_in_five_steps() -> None:
    sigma = np.geomspace(2e-3, 1.0, 200)
    landed = iterate_polynomial(sigma, MUON_COEFFICIENTS, 5)
    assert landed.min() > 0.65 and landed.max() < 1.21
    # Fewer steps leave the small ones behind; zero steps change nothing.
    assert iterate_polynomial(sigma, MUON_COEFFICIENTS, 2).min() < 0.1
    np.testing.assert_array_equal(iterate_polynomial(sigma, MUON_COEFFICIENTS, 0), sigma)


def test_classic_coefficients_converge_to_one_slowly() -> None:
    sigma = np.array([0.01, 0.1, 0.5, 1.0])
    assert iterate_polynomial(sigma, CLASSIC_COEFFICIENTS, 5)[0] < 0.1
    np.testing.assert_allclose(iterate_polynomial(sigma, CLASSIC_COEFFICIENTS, 30), 1.0, atol=1e-9)


def test_escaping_values_become_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        landed = iterate_polynomial(np.array([0.5, 1.0]), (4.0, -4.775, 2.0315), 12)
    assert np.isnan(landed).any()


# --- the Newton–Schulz widget ------------------------------------------------------------------

SIGMA = np.geomspace(1.0, 1e-3, 30)


def test_widget_starts_with_muons_five_steps() -> None:
    explorer = NewtonSchulzExplorer(SIGMA)
    assert explorer.steps == 5 and explorer.coefficients == MUON_COEFFICIENTS
    np.testing.assert_allclose(np.sum(explorer.inputs**2), 1.0)  # divided by the Frobenius norm
    np.testing.assert_allclose(
        explorer.landed, iterate_polynomial(explorer.inputs, MUON_COEFFICIENTS, 5)
    )
    points = xy(explorer.artists.points)
    np.testing.assert_allclose(points[:, 0], explorer.inputs)
    np.testing.assert_allclose(points[:, 1], explorer.landed)


def test_moving_the_steps_slider_redraws() -> None:
    explorer = NewtonSchulzExplorer(SIGMA)
    curve, landed = xy(explorer.artists.curve), xy(explorer.artists.landed)
    title = explorer.artists.summary.get_text()
    explorer.sliders["steps"].value = 2
    assert not np.allclose(xy(explorer.artists.curve), curve, equal_nan=True)
    assert not np.allclose(xy(explorer.artists.landed), landed, equal_nan=True)
    assert explorer.artists.summary.get_text() != title
    assert "after 2 steps" in explorer.artists.summary.get_text()


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_moving_a_coefficient_slider_redraws(name: str) -> None:
    explorer = NewtonSchulzExplorer(SIGMA)
    before = xy(explorer.artists.points)
    explorer.sliders[name].value = explorer.sliders[name].value + 0.2
    assert not np.allclose(xy(explorer.artists.points), before, equal_nan=True)


def test_the_preset_sets_the_coefficients() -> None:
    explorer = NewtonSchulzExplorer(SIGMA)
    classic = [k for k, v in PRESETS.items() if v == CLASSIC_COEFFICIENTS][0]
    explorer.preset.value = classic
    assert explorer.coefficients == CLASSIC_COEFFICIENTS
    np.testing.assert_allclose(
        explorer.landed, iterate_polynomial(explorer.inputs, CLASSIC_COEFFICIENTS, 5)
    )


def test_update_artists_is_a_plain_function_and_reports_escapes() -> None:
    explorer = NewtonSchulzExplorer(SIGMA)
    landed = update_artists(
        explorer.artists, explorer.grid, explorer.inputs, (4.2, -4.775, 2.0315), 8
    )
    assert np.isnan(landed).any()
    assert "escaped" in explorer.artists.summary.get_text()
    curve, inputs_landed = newton_schulz_map(explorer.grid, explorer.inputs, MUON_COEFFICIENTS, 5)
    assert curve.shape == explorer.grid.shape and inputs_landed.shape == explorer.inputs.shape
    assert BAND[0] < np.nanmax(inputs_landed) <= 1.21


def test_widget_leaves_out_zero_singular_values_and_refuses_all_zero() -> None:
    explorer = NewtonSchulzExplorer(np.array([2.0, 1.0, 0.0, 1e-20]))
    assert explorer.inputs.size == 2
    with pytest.raises(ValueError, match="zero"):
        NewtonSchulzExplorer(np.zeros(3))


# --- the training race -------------------------------------------------------------------------


def _task() -> tuple[list, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 5, generator=gen)
    y = (X[:, 0] > 0).long()
    batches = [(X[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)] * 5
    return batches, X, y


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def test_train_run_records_loss_steps_and_seconds() -> None:
    batches, X, y = _task()
    model = _model()
    record = train_run(model, [torch.optim.SGD(model.parameters(), lr=0.5)], batches, X, y,
                       eval_every=4, progress=False)  # fmt: skip
    np.testing.assert_array_equal(record.steps, [0, 4, 8, 12, 16, 20])
    assert record.losses.shape == record.seconds.shape == (6,)
    assert np.all(np.diff(record.seconds) >= 0) and record.seconds[0] == 0
    assert record.losses[-1] < record.losses[0]


def test_two_optimizers_step_together() -> None:
    batches, X, y = _task()
    model = _model()
    first, last = model[0], model[2]
    before = [p.detach().clone() for p in model.parameters()]
    opts = [torch.optim.SGD(first.parameters(), lr=0.1), torch.optim.Adam(last.parameters())]
    train_run(model, opts, batches[:2], X, y, progress=False)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_steps_and_seconds_to_a_target() -> None:
    record = RunRecord("r", np.array([0, 10, 20]), np.array([0.0, 1.0, 2.5]),
                       np.array([2.0, 0.5, 0.1]))  # fmt: skip
    assert record.steps_to(0.5) == 10 and record.seconds_to(0.2) == 2.5
    assert record.steps_to(0.01) is None and record.seconds_to(0.01) is None


def test_sweep_and_best_run() -> None:
    batches, X, y = _task()
    runs = sweep(_model, lambda m, lr: [torch.optim.SGD(m.parameters(), lr=lr)], [1e-4, 0.5],
                 batches, X, y, eval_every=4, progress=False)  # fmt: skip
    assert list(runs) == [1e-4, 0.5]
    target = float(runs[0.5].losses[-1]) + 1e-6
    lr, record = best_run(runs, target)
    assert lr == 0.5 and record is runs[0.5]
    # Nobody reaches an impossible target: the lowest final loss wins.
    assert best_run(runs, -1.0)[0] == 0.5
    fig = plot_runs({"slow": runs[1e-4], "fast": runs[0.5]}, target)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 3
