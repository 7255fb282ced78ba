"""The trajectory explorer: sliders and a Play button over optimizer paths on a landscape.

Kept responsive on a 1-CPU Binder: paths are computed once per hyperparameter change (sliders
only report when released, which debounces them), and moving through the steps only changes
the data of existing matplotlib artists; nothing is redrawn from scratch.

The update logic is two plain functions, :func:`compute_trajectories` and
:func:`update_artists`, so tests can drive the widget without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from optlab.figure_view import figure_view, redraw
from optlab.landscapes import Landscape
from optlab.plots import COLORS, draw_landscape, loss_gap
from optlab.trajectories import Trajectory, run_trajectory

__all__ = [
    "OptimizerSpec",
    "SLIDERS",
    "ExplorerArtists",
    "compute_trajectories",
    "update_artists",
    "TrajectoryExplorer",
]

# Slider name -> (label, default, min, max, step, log scale). The learning rate is a log slider
# whose min/max are exponents of 10.
SLIDERS: dict[str, tuple[str, float, float, float, float, bool]] = {
    "lr": ("learning rate", 0.01, -4.0, 0.5, 0.05, True),
    "beta1": ("momentum β1", 0.9, 0.0, 0.999, 0.01, False),
    "beta2": ("β2", 0.999, 0.5, 0.9999, 0.0001, False),
    "weight_decay": ("weight decay λ", 0.0, 0.0, 1.0, 0.01, False),
}


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer shown in the explorer.

    ``hyper`` maps constructor keywords to slider names, a tuple of names building a tuple
    argument: ``{"lr": "lr", "betas": ("beta1", "beta2")}`` for Adam. ``fixed`` holds constructor
    arguments that no slider controls.
    """

    label: str
    cls: Any
    hyper: Mapping[str, str | tuple[str, ...]] = field(default_factory=lambda: {"lr": "lr"})
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sliders(self) -> set[str]:
        """The slider names this optimizer reads."""
        names: set[str] = set()
        for source in self.hyper.values():
            names.update((source,) if isinstance(source, str) else source)
        return names

    def kwargs(self, values: Mapping[str, float]) -> dict[str, Any]:
        """Constructor arguments for the given slider values."""
        out = dict(self.fixed)
        for key, source in self.hyper.items():
            if isinstance(source, str):
                out[key] = values[source]
            else:
                out[key] = tuple(values[s] for s in source)
        return out


@dataclass
class ExplorerArtists:
    """The matplotlib artists that change while the explorer runs, one entry per optimizer."""

    paths: list[Line2D]
    heads: list[Line2D]
    losses: list[Line2D]


def compute_trajectories(
    landscape: Landscape,
    specs: Sequence[OptimizerSpec],
    values: Mapping[str, float],
    n_steps: int,
) -> list[Trajectory]:
    """Run every optimizer for ``n_steps`` with the slider ``values``; one trajectory each."""
    return [run_trajectory(landscape, spec.cls, n_steps, **spec.kwargs(values)) for spec in specs]


def update_artists(
    artists: ExplorerArtists,
    landscape: Landscape,
    trajectories: Sequence[Trajectory],
    step: int,
) -> None:
    """Show every trajectory up to ``step``: its path so far, where it is now, its loss curve."""
    for path_line, head, loss_line, traj in zip(
        artists.paths, artists.heads, artists.losses, trajectories, strict=True
    ):
        shown = slice(0, step + 1)
        if landscape.dim == 1:
            xs, ys = traj.path[shown, 0], traj.losses[shown]
        else:
            xs, ys = traj.path[shown, 0], traj.path[shown, 1]
        path_line.set_data(xs, ys)
        finite = np.flatnonzero(np.isfinite(xs))
        if finite.size:
            head.set_data(xs[finite[-1:]], ys[finite[-1:]])
        else:
            head.set_data([], [])
        gap = loss_gap(landscape, traj.losses[shown])
        loss_line.set_data(np.arange(gap.size), gap)


class TrajectoryExplorer:
    """Several optimizers side by side on one landscape, with sliders and a Play control.

    Only the sliders that at least one optimizer reads are shown. Display the explorer by
    leaving it as the last expression of a cell, or with ``display(explorer.widget)``.
    """

    def __init__(
        self,
        landscape: Landscape,
        specs: Sequence[OptimizerSpec],
        n_steps: int = 100,
        values: Mapping[str, float] | None = None,
    ) -> None:
        if not specs:
            raise ValueError("TrajectoryExplorer needs at least one OptimizerSpec")
        unknown = {name for spec in specs for name in spec.sliders} - set(SLIDERS)
        if unknown:
            raise ValueError(f"unknown slider names {sorted(unknown)}; known: {sorted(SLIDERS)}")
        self.landscape = landscape
        self.specs = list(specs)
        self.n_steps = n_steps
        self.sliders = self._make_sliders(values or {})
        # Start on the last step so the whole path shows at once; Play rewinds and animates it.
        self.step_slider = widgets.IntSlider(n_steps, 0, n_steps, description="step")
        self.play = widgets.Play(value=n_steps, min=0, max=n_steps, interval=60)
        widgets.jslink((self.play, "value"), (self.step_slider, "value"))

        with plt.ioff():
            self.figure, (self.ax_map, self.ax_loss) = plt.subplots(
                1, 2, figsize=(9.5, 3.8), layout="constrained"
            )
        draw_landscape(self.ax_map, landscape)
        self.artists = self._make_artists()
        self.trajectories = compute_trajectories(landscape, self.specs, self.values, n_steps)
        self._rescale_loss_axis()
        update_artists(self.artists, landscape, self.trajectories, self.step_slider.value)

        self._output = figure_view(self.figure)
        for slider in self.sliders.values():
            slider.observe(self._on_hyperparameters, names="value")
        self.step_slider.observe(self._on_step, names="value")
        controls = widgets.VBox(
            [*self.sliders.values(), widgets.HBox([self.play, self.step_slider])]
        )
        self.widget = widgets.VBox([controls, self._output])

    @property
    def values(self) -> dict[str, float]:
        """Current slider values by slider name."""
        return {name: float(slider.value) for name, slider in self.sliders.items()}

    def _make_sliders(self, values: Mapping[str, float]) -> dict[str, widgets.Widget]:
        used = set().union(*(spec.sliders for spec in self.specs))
        sliders: dict[str, widgets.Widget] = {}
        for name, (label, default, lo, hi, step, log) in SLIDERS.items():
            if name not in used:
                continue
            value = float(values.get(name, default))
            common = dict(
                value=value,
                min=lo,
                max=hi,
                step=step,
                description=label,
                continuous_update=False,
                style={"description_width": "110px"},
                layout=widgets.Layout(width="420px"),
            )
            if log:
                sliders[name] = widgets.FloatLogSlider(base=10, readout_format=".2e", **common)
            else:
                sliders[name] = widgets.FloatSlider(readout_format=".4g", **common)
        return sliders

    def _make_artists(self) -> ExplorerArtists:
        paths, heads, losses = [], [], []
        for color, spec in zip(COLORS, self.specs, strict=False):
            (path,) = self.ax_map.plot([], [], "-", color=color, lw=1.5, label=spec.label)
            (head,) = self.ax_map.plot([], [], "o", color=color, ms=7, mec="k")
            (loss,) = self.ax_loss.plot([], [], color=color, label=spec.label)
            paths.append(path)
            heads.append(head)
            losses.append(loss)
        self.ax_map.legend(loc="upper right", fontsize=8)
        self.ax_loss.set_yscale("log")
        self.ax_loss.set_xlim(0, self.n_steps)
        self.ax_loss.set_xlabel("step")
        self.ax_loss.set_ylabel("loss − minimum")
        return ExplorerArtists(paths=paths, heads=heads, losses=losses)

    def _rescale_loss_axis(self) -> None:
        gaps = np.concatenate([loss_gap(self.landscape, t.losses) for t in self.trajectories])
        gaps = gaps[np.isfinite(gaps)]
        if gaps.size:
            self.ax_loss.set_ylim(max(gaps.min() * 0.5, 1e-12), gaps.max() * 2)

    def _on_hyperparameters(self, _change: dict[str, Any]) -> None:
        self.trajectories = compute_trajectories(
            self.landscape, self.specs, self.values, self.n_steps
        )
        self._rescale_loss_axis()
        update_artists(self.artists, self.landscape, self.trajectories, self.step_slider.value)
        redraw(self.figure, self._output)

    def _on_step(self, change: dict[str, Any]) -> None:
        update_artists(self.artists, self.landscape, self.trajectories, change["new"])
        redraw(self.figure, self._output)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
