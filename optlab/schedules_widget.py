"""The schedule-shape widget: sliders for warmup, peak and final learning rate over a schedule.

The student passes in their own schedule, a function of the step with keyword arguments
``peak_lr``, ``final_lr``, ``warmup_steps`` and ``total_steps``; the widget plots the learning
rate it gives at every step. Moving a slider recomputes the curve and only changes the data of
the existing matplotlib artists; nothing is redrawn from scratch.

The update logic is two plain functions, :func:`schedule_curve` and :func:`update_artists`, so
tests can drive the widget without a browser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from optlab.figure_view import figure_view, redraw

__all__ = ["DEFAULTS", "ScheduleArtists", "schedule_curve", "update_artists", "ScheduleExplorer"]

Schedule = Callable[..., float]

# Slider name -> its starting value.
DEFAULTS: dict[str, float] = {"warmup_steps": 20, "peak_lr": 0.1, "final_lr": 0.01}

# Steps shown after total_steps, so the plot shows where the schedule settles.
TAIL_FRACTION = 0.15


@dataclass
class ScheduleArtists:
    """The matplotlib artists that change when a slider moves."""

    curve: Line2D
    warmup_end: Line2D
    peak: Line2D
    final: Line2D
    total: Line2D


def schedule_curve(
    schedule: Schedule, values: Mapping[str, float], total_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """The steps ``0 .. total_steps`` plus a short tail, and the schedule's lr at each."""
    tail = max(1, int(round(total_steps * TAIL_FRACTION)))
    steps = np.arange(total_steps + tail + 1)
    kwargs = {
        "peak_lr": float(values["peak_lr"]),
        "final_lr": float(values["final_lr"]),
        "warmup_steps": int(values["warmup_steps"]),
        "total_steps": int(total_steps),
    }
    lrs = np.array([float(schedule(int(s), **kwargs)) for s in steps], dtype=float)
    return steps, lrs


def update_artists(
    artists: ScheduleArtists,
    steps: np.ndarray,
    lrs: np.ndarray,
    values: Mapping[str, float],
    total_steps: int,
) -> None:
    """Show the curve, the end of warmup, the peak and final levels, and rescale the axes."""
    artists.curve.set_data(steps, lrs)
    warmup = float(values["warmup_steps"])
    artists.warmup_end.set_xdata([warmup, warmup])
    artists.peak.set_ydata([values["peak_lr"], values["peak_lr"]])
    artists.final.set_ydata([values["final_lr"], values["final_lr"]])
    artists.total.set_xdata([total_steps, total_steps])
    ax = artists.curve.axes
    finite = lrs[np.isfinite(lrs)]
    top = max([float(values["peak_lr"]), float(values["final_lr"]), *finite.tolist(), 1e-12])
    bottom = min([0.0, *finite.tolist()])
    ax.set_xlim(0, steps[-1])
    ax.set_ylim(bottom - 0.05 * top, top * 1.1)


class ScheduleExplorer:
    """Sliders for warmup steps, peak lr and final lr over the plot of ``schedule``.

    Display it by leaving it as the last expression of a cell, or with
    ``display(explorer.widget)``.
    """

    def __init__(
        self,
        schedule: Schedule,
        total_steps: int = 200,
        values: Mapping[str, float] | None = None,
        title: str = "",
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}")
        self.schedule = schedule
        self.total_steps = int(total_steps)
        start = {**DEFAULTS, **(values or {})}
        self.sliders = self._make_sliders(start)

        with plt.ioff():
            self.figure, self.ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
        self.artists = self._make_artists()
        if title:
            self.ax.set_title(title)
        self.refresh()

        self._output = figure_view(self.figure)
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.VBox(list(self.sliders.values())), self._output])

    @property
    def values(self) -> dict[str, float]:
        """Current slider values by name."""
        return {name: slider.value for name, slider in self.sliders.items()}

    def refresh(self) -> None:
        """Recompute the curve for the current slider values and update the artists."""
        self.steps, self.lrs = schedule_curve(self.schedule, self.values, self.total_steps)
        update_artists(self.artists, self.steps, self.lrs, self.values, self.total_steps)

    def _make_sliders(self, start: Mapping[str, float]) -> dict[str, widgets.Widget]:
        common: dict[str, Any] = dict(
            continuous_update=False,
            style={"description_width": "110px"},
            layout=widgets.Layout(width="420px"),
        )

        def lr_slider(name: str, low: float) -> widgets.FloatSlider:
            return widgets.FloatSlider(
                value=float(start[name]),
                min=low,
                max=1.0,
                step=0.001,
                readout_format=".3f",
                description=name.replace("_", " "),
                **common,
            )

        return {
            "warmup_steps": widgets.IntSlider(
                value=int(start["warmup_steps"]),
                min=0,
                max=self.total_steps - 1,
                description="warmup steps",
                **common,
            ),
            "peak_lr": lr_slider("peak_lr", 0.001),
            "final_lr": lr_slider("final_lr", 0.0),
        }

    def _make_artists(self) -> ScheduleArtists:
        ax = self.ax
        (curve,) = ax.plot([], [], color="tab:blue", lw=2, label="your schedule")
        warmup_end = ax.axvline(0, color="tab:orange", ls="--", lw=1, label="end of warmup")
        total = ax.axvline(self.total_steps, color="0.5", ls=":", lw=1, label="total_steps")
        peak = ax.axhline(0, color="tab:green", ls=":", lw=1, label="peak lr")
        final = ax.axhline(0, color="tab:red", ls=":", lw=1, label="final lr")
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.legend(loc="upper right", fontsize=8)
        return ScheduleArtists(
            curve=curve, warmup_end=warmup_end, peak=peak, final=final, total=total
        )

    def _on_change(self, _change: dict[str, Any]) -> None:
        self.refresh()
        redraw(self.figure, self._output)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
