"""Helpers for the optimization course notebooks: landscapes, trajectories, widgets, plots, data.

Import the module you need (``from optlab.landscapes import Quadratic``); importing the package
itself loads nothing heavy.
"""

__version__ = "0.1.0"
