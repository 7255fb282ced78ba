"""Landscapes: exact gradients, known minima, and the dip that stops plain SGD."""

from __future__ import annotations

import pytest
import torch

from optlab.landscapes import LANDSCAPES, DipCurve, Quadratic, get_landscape
from optlab.trajectories import run_trajectory

ALL = list(LANDSCAPES.values()) + [Quadratic(eigenvalues=(2.0, 50.0), angle=0.6)]


@pytest.mark.parametrize("landscape", ALL, ids=lambda land: land.name)
def test_analytic_gradient_matches_autograd(landscape) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        lows = torch.tensor([b[0] for b in landscape.bounds], dtype=torch.float64)
        highs = torch.tensor([b[1] for b in landscape.bounds], dtype=torch.float64)
        x = lows + (highs - lows) * torch.rand(landscape.dim, generator=gen, dtype=torch.float64)
        x.requires_grad_(True)
        landscape.loss(x).backward()
        torch.testing.assert_close(landscape.grad(x.detach()), x.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("landscape", ALL, ids=lambda land: land.name)
def test_minimum_is_stationary_and_lowest_on_a_grid(landscape) -> None:
    xmin = torch.tensor(landscape.minimum, dtype=torch.float64)
    assert landscape.grad(xmin).abs().max() < 1e-9
    axes = [torch.linspace(lo, hi, 301, dtype=torch.float64) for lo, hi in landscape.bounds]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    assert landscape.loss(grid).min() >= landscape.minimum_loss - 1e-12


def test_plain_sgd_stops_in_the_dip_and_momentum_rolls_out() -> None:
    dip = DipCurve()
    for lr in (0.01, 0.05, 0.1, 0.3):
        stuck = run_trajectory(dip, torch.optim.SGD, 400, lr=lr).final_point[0]
        assert abs(stuck - dip.dip_center) < 0.2, f"SGD lr={lr} should stop in the dip"
    rolled = run_trajectory(dip, torch.optim.SGD, 400, lr=0.05, momentum=0.9).final_point[0]
    assert abs(rolled - dip.minimum[0]) < 1e-3


def test_ravine_threshold_is_two_over_lambda_max() -> None:
    ravine = Quadratic(eigenvalues=(1.0, 20.0))
    # Either side of 2/20 = 0.1 the steep direction shrinks or grows by about 2% per step.
    below = run_trajectory(ravine, torch.optim.SGD, 400, lr=0.099)
    above = run_trajectory(ravine, torch.optim.SGD, 400, lr=0.101)
    assert below.losses[-1] < 1e-3 * below.losses[0]
    assert above.diverged_at is not None or above.losses[-1] > 10 * above.losses[0]


def test_unknown_landscape_names_the_choices() -> None:
    with pytest.raises(ValueError, match="rosenbrock"):
        get_landscape("nope")


def test_divergence_is_cut_and_padded() -> None:
    traj = run_trajectory(Quadratic(), torch.optim.SGD, 300, lr=0.5)
    assert traj.diverged_at is not None
    assert traj.path.shape == (301, 2)
    assert torch.isnan(torch.tensor(traj.losses[traj.diverged_at :])).all()
