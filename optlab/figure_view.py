"""A matplotlib figure shown inside an ipywidgets layout, redrawn when a slider moves.

With the ipympl backend (``%matplotlib widget``) the figure's canvas is itself a widget that
redraws in place. With any other backend the figure is shown as an image in an ``Output``
area, which is cleared and drawn again on every change.
"""

from __future__ import annotations

import ipywidgets as widgets
from matplotlib.figure import Figure

__all__ = ["figure_view", "redraw"]


def figure_view(figure: Figure) -> widgets.Widget:
    """The widget that shows ``figure``: its canvas under ipympl, else an Output area."""
    if isinstance(figure.canvas, widgets.DOMWidget):
        return figure.canvas
    output = widgets.Output()
    with output:
        from IPython.display import display

        display(figure)
    return output


def redraw(figure: Figure, view: widgets.Widget) -> None:
    """Show the current state of ``figure`` in ``view`` (made by :func:`figure_view`)."""
    if isinstance(view, widgets.Output):
        from IPython.display import display

        view.clear_output(wait=True)
        with view:
            display(figure)
    else:
        figure.canvas.draw_idle()
