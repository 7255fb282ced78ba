"""The Newton–Schulz widget: where an odd polynomial, iterated, sends each singular value.

Newton–Schulz works on the singular values one by one: after dividing a matrix by its Frobenius
norm, each singular value σ in (0, 1] is replaced by p(σ) = aσ + bσ³ + cσ⁵, ``steps`` times. The
widget draws the iterated map over σ (left) and where a real matrix's singular values land
(right), with sliders for the number of steps and the coefficients.

The update logic is two plain functions, :func:`newton_schulz_map` and :func:`update_artists`,
so tests can drive the widget without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.text import Text

from optlab.figure_view import figure_view, redraw
from optlab.orthogonal import CLASSIC_COEFFICIENTS, MUON_COEFFICIENTS, iterate_polynomial

__all__ = [
    "PRESETS",
    "BAND",
    "NewtonSchulzArtists",
    "newton_schulz_map",
    "update_artists",
    "NewtonSchulzExplorer",
]

PRESETS: dict[str, tuple[float, float, float]] = {
    "Muon (3.4445, −4.775, 2.0315)": MUON_COEFFICIENTS,
    "classic (1.5, −0.5, 0)": CLASSIC_COEFFICIENTS,
}
# Where Muon's default quintic leaves the singular values after 5 steps (roughly).
BAND = (0.7, 1.2)
GRID = np.geomspace(1e-4, 1.0, 400)
# Relative to the norm, singular values below this count as zero (rounding, dead units).
ZERO = 1e-10


@dataclass
class NewtonSchulzArtists:
    """The matplotlib artists that change when a slider moves."""

    curve: Line2D
    points: Line2D
    landed: Line2D
    summary: Text


def newton_schulz_map(
    grid: np.ndarray, inputs: np.ndarray, coefficients: Sequence[float], steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """The iterated polynomial over ``grid``, and the values the ``inputs`` land on."""
    return (
        iterate_polynomial(grid, coefficients, steps),
        iterate_polynomial(inputs, coefficients, steps),
    )


def update_artists(
    artists: NewtonSchulzArtists,
    grid: np.ndarray,
    inputs: np.ndarray,
    coefficients: Sequence[float],
    steps: int,
) -> np.ndarray:
    """Redraw the curve and the landed singular values; return where the inputs land."""
    curve, landed = newton_schulz_map(grid, inputs, coefficients, steps)
    artists.curve.set_data(grid, curve)
    artists.points.set_data(inputs, landed)
    artists.landed.set_data(np.arange(1, landed.size + 1), landed)
    finite = landed[np.isfinite(landed)]
    if finite.size < landed.size:
        text = f"after {steps} steps: {landed.size - finite.size} values escaped to infinity"
    else:
        text = f"after {steps} steps: from {finite.min():.3g} to {finite.max():.3g}"
    artists.summary.set_text(text)
    return landed


class NewtonSchulzExplorer:
    """Sliders for the number of steps and the coefficients (a, b, c) over the iterated map.

    ``sigma`` are the singular values of a matrix; they are divided by its Frobenius norm
    (the square root of their sum of squares), as the iteration does first. Singular values
    below ``ZERO`` times the norm (directions the matrix does not have) are left out.
    """

    def __init__(
        self,
        sigma: np.ndarray,
        steps: int = 5,
        coefficients: Sequence[float] = MUON_COEFFICIENTS,
    ) -> None:
        sigma = np.sort(np.asarray(sigma, dtype=float))[::-1]
        norm = float(np.sqrt(np.sum(sigma**2)))
        if norm == 0:
            raise ValueError("the singular values are all zero")
        self.inputs = sigma[sigma > ZERO * norm] / norm
        self.grid = GRID
        self.sliders = self._make_sliders(steps, coefficients)
        self.preset = widgets.Dropdown(
            options=list(PRESETS), description="preset", layout=widgets.Layout(width="420px")
        )
        self.preset.observe(self._on_preset, names="value")

        with plt.ioff():
            self.figure, (self.ax_map, self.ax_out) = plt.subplots(
                1, 2, figsize=(9.5, 3.6), layout="constrained"
            )
        self.artists = self._make_artists()
        self.landed = self.refresh()

        self._output = figure_view(self.figure)
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")
        controls = widgets.VBox([self.preset, *self.sliders.values()])
        self.widget = widgets.VBox([controls, self._output])

    @property
    def coefficients(self) -> tuple[float, float, float]:
        """The current (a, b, c)."""
        return (
            float(self.sliders["a"].value),
            float(self.sliders["b"].value),
            float(self.sliders["c"].value),
        )

    @property
    def steps(self) -> int:
        """The current number of steps."""
        return int(self.sliders["steps"].value)

    def refresh(self) -> np.ndarray:
        """Recompute for the current sliders; return where the singular values land."""
        self.landed = update_artists(
            self.artists, self.grid, self.inputs, self.coefficients, self.steps
        )
        return self.landed

    def _make_sliders(self, steps: int, coefficients: Sequence[float]) -> dict[str, widgets.Widget]:
        common: dict[str, Any] = dict(
            continuous_update=False,
            style={"description_width": "110px"},
            layout=widgets.Layout(width="420px"),
        )
        a, b, c = coefficients
        return {
            "steps": widgets.IntSlider(int(steps), 0, 12, description="steps", **common),
            "a": widgets.FloatSlider(
                a, min=0.0, max=5.0, step=0.0005, readout_format=".4f", description="a (σ)",
                **common,
            ),
            "b": widgets.FloatSlider(
                b, min=-7.0, max=1.0, step=0.0005, readout_format=".4f", description="b (σ³)",
                **common,
            ),
            "c": widgets.FloatSlider(
                c, min=-1.0, max=4.0, step=0.0005, readout_format=".4f", description="c (σ⁵)",
                **common,
            ),
        }  # fmt: skip

    def _make_artists(self) -> NewtonSchulzArtists:
        ax, out = self.ax_map, self.ax_out
        ax.axhspan(*BAND, color="tab:green", alpha=0.12, lw=0)
        ax.axhline(1.0, color="0.5", ls=":", lw=1)
        ax.plot(self.grid, self.grid, color="0.6", ls="--", lw=1, label="σ (no step)")
        (curve,) = ax.plot([], [], color="tab:blue", lw=2, label="after the steps")
        (points,) = ax.plot([], [], "o", color="tab:red", ms=4, label="this matrix's σ")
        ax.set_xscale("log")
        ax.set_xlim(self.grid[0], 1.0)
        ax.set_ylim(0, 1.6)
        ax.set_xlabel("σ / ‖G‖_F (before)")
        ax.set_ylabel("after")
        ax.legend(loc="upper left", fontsize=8)

        ranks = np.arange(1, self.inputs.size + 1)
        out.axhspan(*BAND, color="tab:green", alpha=0.12, lw=0)
        out.plot(ranks, self.inputs, color="0.6", lw=1.5, label="before")
        (landed,) = out.plot([], [], "o-", color="tab:red", ms=3, lw=1, label="after")
        out.set_yscale("log")
        out.set_ylim(1e-4, 3)
        out.set_xlabel("direction (singular value rank)")
        out.set_ylabel("singular value")
        out.legend(loc="lower left", fontsize=8)
        summary = out.set_title("", fontsize=9)
        return NewtonSchulzArtists(curve=curve, points=points, landed=landed, summary=summary)

    def _on_preset(self, change: dict[str, Any]) -> None:
        for name, value in zip("abc", PRESETS[change["new"]], strict=True):
            self.sliders[name].value = value

    def _on_change(self, _change: dict[str, Any]) -> None:
        self.refresh()
        redraw(self.figure, self._output)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
