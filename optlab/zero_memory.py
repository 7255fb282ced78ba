"""The ZeRO memory calculator: per-device memory of model states for DP and ZeRO stages 1-3.

The formula itself is an exercise, so the widget takes it as an argument: any function
``memory_fn(n_params, n_devices, stage, k=12)`` that returns bytes per device, stage 0 being
plain data parallelism. Sliders set the parameter count, the number of devices and K (bytes of
optimizer state per parameter); the left plot shows the four stages as bars, the right one how
each stage scales with the number of devices.

The update logic is plain functions (:func:`memory_gb`, :func:`update_memory_artists`), so
tests can drive the widget without a browser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.container import BarContainer
from matplotlib.lines import Line2D
from matplotlib.text import Text

from optlab.figure_view import figure_view, redraw
from optlab.plots import COLORS

__all__ = [
    "DEVICE_CHOICES",
    "STAGES",
    "MemoryArtists",
    "MemoryCalculator",
    "memory_curves",
    "memory_gb",
    "update_memory_artists",
]

MemoryFn = Callable[..., float]

STAGES = ("plain DP", "ZeRO-1\n(P_os)", "ZeRO-2\n(P_os+g)", "ZeRO-3\n(P_os+g+p)")
DEVICE_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
GB = 1e9  # the ZeRO paper's gigabytes


def memory_gb(memory_fn: MemoryFn, n_params: float, n_devices: int, k: float) -> list[float]:
    """Per-device GB of model states for stages 0-3 (0 is plain data parallelism)."""
    return [float(memory_fn(n_params, n_devices, stage, k=k)) / GB for stage in range(4)]


def memory_curves(
    memory_fn: MemoryFn, n_params: float, k: float, devices: Sequence[int] = DEVICE_CHOICES
) -> np.ndarray:
    """GB per device, shape ``(4, len(devices))``: one row per stage."""
    return np.array([memory_gb(memory_fn, n_params, nd, k) for nd in devices]).T


@dataclass
class MemoryArtists:
    """The matplotlib artists the calculator changes when a slider moves."""

    bars: BarContainer
    labels: list[Text]
    curves: list[Line2D]
    marker: Line2D


def update_memory_artists(
    artists: MemoryArtists, memory_fn: MemoryFn, n_params: float, n_devices: int, k: float
) -> list[float]:
    """Show the stages for these values: bar heights and labels, curves, the device marker."""
    values = memory_gb(memory_fn, n_params, n_devices, k)
    for bar, label, value in zip(artists.bars.patches, artists.labels, values, strict=True):
        bar.set_height(value)
        label.set_position((bar.get_x() + bar.get_width() / 2, value))
        label.set_text(_fmt_gb(value))
    curves = memory_curves(memory_fn, n_params, k)
    for line, row in zip(artists.curves, curves, strict=True):
        line.set_ydata(row)
    artists.marker.set_xdata([n_devices, n_devices])
    return values


def _fmt_gb(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} GB"
    if value >= 1:
        return f"{value:.1f} GB"
    return f"{value:.2g} GB"


class MemoryCalculator:
    """Sliders for parameter count, device count and K over per-device memory plots.

    ``memory_fn(n_params, n_devices, stage, k=12)`` returns bytes per device. A dashed line marks
    ``device_memory_gb``, the memory of one accelerator (80 GB for an H100).
    """

    def __init__(
        self,
        memory_fn: MemoryFn,
        n_params: float = 7.5e9,
        n_devices: int = 64,
        k: int = 12,
        device_memory_gb: float = 80.0,
    ) -> None:
        self.memory_fn = memory_fn
        style = {"description_width": "150px"}
        layout = widgets.Layout(width="460px")
        self.sliders = {
            "n_params": widgets.FloatLogSlider(
                value=n_params, base=10, min=8, max=12.3, step=0.05, readout_format=".3g",
                description="parameters Ψ", continuous_update=False, style=style, layout=layout,
            ),
            "n_devices": widgets.SelectionSlider(
                options=list(DEVICE_CHOICES), value=n_devices, description="devices N_d",
                continuous_update=False, style=style, layout=layout,
            ),
            "k": widgets.IntSlider(
                value=k, min=2, max=24, description="K (optimizer bytes)",
                continuous_update=False, style=style, layout=layout,
            ),
        }  # fmt: skip
        with plt.ioff():
            self.figure, (self.ax_bars, self.ax_curves) = plt.subplots(
                1, 2, figsize=(9.5, 3.8), layout="constrained"
            )
        self.artists = self._make_artists(device_memory_gb)
        self.update()
        self._output = figure_view(self.figure)
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")
        self.widget = widgets.VBox([*self.sliders.values(), self._output])

    @property
    def values(self) -> dict[str, Any]:
        """Current slider values."""
        return {name: slider.value for name, slider in self.sliders.items()}

    def update(self) -> list[float]:
        """Redraw the artists for the current sliders; the GB per stage."""
        v = self.values
        values = update_memory_artists(
            self.artists, self.memory_fn, v["n_params"], v["n_devices"], v["k"]
        )
        curves = memory_curves(self.memory_fn, v["n_params"], v["k"])
        finite = curves[np.isfinite(curves) & (curves > 0)]
        if finite.size:
            self.ax_bars.set_ylim(finite.min() / 3, finite.max() * 4)
            self.ax_curves.set_ylim(finite.min() / 2, finite.max() * 2)
        self.ax_bars.set_title(f"Ψ = {v['n_params']:.3g}, N_d = {v['n_devices']}, K = {v['k']}")
        return values

    def _make_artists(self, device_memory_gb: float) -> MemoryArtists:
        x = np.arange(len(STAGES))
        bars = self.ax_bars.bar(x, np.ones(len(STAGES)), color=COLORS[: len(STAGES)])
        labels = [self.ax_bars.text(i, 1.0, "", ha="center", va="bottom", fontsize=8) for i in x]
        self.ax_bars.set_xticks(x, STAGES, fontsize=8)
        self.ax_bars.set_yscale("log")
        self.ax_bars.set_ylabel("model states per device (GB)")
        curves = []
        for color, name in zip(COLORS, STAGES, strict=False):
            (line,) = self.ax_curves.plot(
                DEVICE_CHOICES, np.ones(len(DEVICE_CHOICES)), "o-", ms=3, color=color,
                label=name.replace("\n", " "),
            )  # fmt: skip
            curves.append(line)
        for ax in (self.ax_bars, self.ax_curves):
            ax.axhline(device_memory_gb, color="0.3", ls="--", lw=1)
        self.ax_curves.text(
            DEVICE_CHOICES[-1], device_memory_gb, f"{device_memory_gb:g} GB: one device ",
            ha="right", va="top", fontsize=8, color="0.3",
        )  # fmt: skip
        marker = self.ax_curves.axvline(1, color="k", lw=0.8)
        self.ax_curves.set_xscale("log", base=2)
        self.ax_curves.set_yscale("log")
        self.ax_curves.set_xlabel("devices N_d")
        self.ax_curves.set_ylabel("GB per device")
        self.ax_curves.legend(fontsize=7, loc="lower left")
        return MemoryArtists(bars=bars, labels=labels, curves=curves, marker=marker)

    def _on_change(self, _change: dict[str, Any]) -> None:
        self.update()
        redraw(self.figure, self._output)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
