"""Helpers for the course notebooks, one module per job.

- ``landscapes``, ``trajectories``, ``explorer``, ``plots``: loss surfaces, optimizer paths on
  them, and the trajectory-explorer widget (Weeks 1-4);
- ``data``, ``models``: the digits data set and small models;
- ``memory``: measure the tensors an optimizer keeps in its state (Week 4);
- ``schedules_widget``, ``tracking``: learning-rate schedule widget, TensorBoard logging (Week 5);
- ``bandwidth``: timing and memory-bandwidth figures (Week 6);
- ``launch``, ``collectives``, ``zero_memory``, ``zero_runs``, ``zero_bench``, ``zero_train``:
  multi-process runs, the ZeRO memory calculator, the memory/time comparison, and training with
  a ZeRO-1 module under ``torchrun`` (Week 7).
- ``orthogonal``, ``newton_schulz_widget``, ``training``: singular values of updates, the
  Newton–Schulz polynomial and its widget, and the steps-and-seconds race of optimizers (Week 8).

Import the module you need (``from optlab.landscapes import Quadratic``); importing the package
itself loads nothing heavy.
"""

__version__ = "0.1.0"
