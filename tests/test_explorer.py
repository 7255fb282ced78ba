"""The trajectory explorer's update logic moves the plotted artists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optlab.explorer import OptimizerSpec, TrajectoryExplorer, update_artists
from optlab.landscapes import DipCurve, Quadratic

SPECS = [
    OptimizerSpec("SGD", torch.optim.SGD, {"lr": "lr"}),
    OptimizerSpec("momentum", torch.optim.SGD, {"lr": "lr", "momentum": "beta1"}),
    OptimizerSpec("Adam", torch.optim.Adam, {"lr": "lr", "betas": ("beta1", "beta2")}),
]


def xy(line) -> np.ndarray:
    x, y = line.get_data()
    return np.column_stack([np.asarray(x, float), np.asarray(y, float)])


def test_only_the_sliders_the_optimizers_read_are_shown() -> None:
    only_sgd = TrajectoryExplorer(Quadratic(), SPECS[:1], n_steps=10)
    assert set(only_sgd.sliders) == {"lr"}
    everything = TrajectoryExplorer(Quadratic(), SPECS, n_steps=10)
    assert set(everything.sliders) == {"lr", "beta1", "beta2"}


def test_moving_a_slider_moves_the_paths() -> None:
    explorer = TrajectoryExplorer(Quadratic(), SPECS, n_steps=30, values={"lr": 0.01})
    before = [xy(line) for line in explorer.artists.paths]
    explorer.sliders["lr"].value = 0.05
    after = [xy(line) for line in explorer.artists.paths]
    for b, a in zip(before, after, strict=True):
        assert b.shape == a.shape == (31, 2)
        assert not np.allclose(b, a)
    # beta1 is read by momentum and Adam, not by plain SGD.
    explorer.sliders["beta1"].value = 0.5
    moved = [
        not np.allclose(a, xy(line)) for a, line in zip(after, explorer.artists.paths, strict=True)
    ]
    assert moved == [False, True, True]


def test_the_step_slider_shows_the_path_up_to_that_step() -> None:
    explorer = TrajectoryExplorer(DipCurve(), SPECS[:2], n_steps=40)
    explorer.step_slider.value = 5
    for path, head, loss in zip(
        explorer.artists.paths, explorer.artists.heads, explorer.artists.losses, strict=True
    ):
        assert xy(path).shape == (6, 2)
        np.testing.assert_allclose(xy(head)[0], xy(path)[-1])
        assert xy(loss).shape == (6, 2)


def test_update_artists_is_a_plain_function() -> None:
    explorer = TrajectoryExplorer(Quadratic(), SPECS[:1], n_steps=20)
    trajectories = explorer.trajectories
    update_artists(explorer.artists, explorer.landscape, trajectories, 3)
    assert xy(explorer.artists.paths[0]).shape == (4, 2)
    update_artists(explorer.artists, explorer.landscape, trajectories, 20)
    np.testing.assert_allclose(xy(explorer.artists.paths[0]), trajectories[0].path)


def test_unknown_slider_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown slider"):
        TrajectoryExplorer(Quadratic(), [OptimizerSpec("x", torch.optim.SGD, {"lr": "eta"})])
