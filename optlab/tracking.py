"""Experiment tracking with TensorBoard, offline: event files in a local folder, no server.

Each run of a sweep writes its own folder ``<log_dir>/<run name>/`` with
``torch.utils.tensorboard.SummaryWriter``: scalars (losses, accuracies) as they come, and at the
end its hyperparameters with its final metrics, which TensorBoard's HPARAMS tab shows as a
table. Nothing is uploaded and no server is needed to write or to read the logs back:
:func:`read_runs` parses the event files with TensorBoard's ``EventAccumulator``. To browse
them, run ``tensorboard --logdir <log_dir>`` in a terminal (see :func:`tensorboard_command`).

:func:`session_log_dir` gives a fresh folder outside the course's files, so that running a
notebook never adds files beside it and two notebooks (or graders) running at once never mix
their runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Run", "RunRecord", "read_runs", "session_log_dir", "tensorboard_command"]

# Where session_log_dir puts its folders unless told otherwise.
RUNS_ROOT_VARIABLE = "OPTLAB_RUNS"

HParam = float | int | str | bool


class Run:
    """One tracked run: ``log(step, {name: value})`` while training, ``finish(...)`` at the end.

    Use it as a context manager. Starting a run deletes an older run of the same name in
    ``log_dir``, so running a sweep again replaces its runs instead of mixing them.
    """

    def __init__(self, name: str, hparams: Mapping[str, HParam], log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when used

        if not name or Path(name).name != name:
            raise ValueError(f"a run name must be a plain folder name, got {name!r}")
        self.name = name
        self.hparams = dict(hparams)
        self.path = Path(log_dir) / name
        if self.path.exists():
            shutil.rmtree(self.path)
        self.writer = SummaryWriter(log_dir=str(self.path))
        self._closed = False

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``{name: value}`` at ``step``; a '/' in a name groups curves (``"loss/val"``)."""
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), int(step))

    def finish(self, **metrics: float) -> None:
        """Record the hyperparameters with the run's final ``metrics`` and close the files."""
        if self._closed:
            return
        hparams = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in self.hparams.items()
        }
        final = {f"final/{k}": float(v) for k, v in metrics.items()}
        # run_name="." keeps the hyperparameters in this run's own folder.
        self.writer.add_hparams(hparams, final, run_name=".")
        self.writer.close()
        self._closed = True

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *_exc: object) -> None:
        if not self._closed:
            self.writer.close()
            self._closed = True


@dataclass
class RunRecord:
    """A run read back from its event files: name, hyperparameters, and every scalar series."""

    name: str
    hparams: dict[str, HParam] = field(default_factory=dict)
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """The (steps, values) of scalar ``tag``."""
        if tag not in self.scalars:
            raise KeyError(
                f"run {self.name!r} has no scalar {tag!r}; it has {sorted(self.scalars)}"
            )
        return self.scalars[tag]

    def last(self, tag: str) -> float:
        """The last recorded value of scalar ``tag``."""
        return float(self.series(tag)[1][-1])


def read_runs(log_dir: str | Path) -> list[RunRecord]:
    """Every run under ``log_dir`` (one folder each), sorted by name, read from its events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = Path(log_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no logs in {root}: run the sweep first")
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not any(folder.glob("events.out.tfevents.*")):
            continue
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        scalars = {}
        for tag in acc.Tags()["scalars"]:
            events = acc.Scalars(tag)
            scalars[tag] = (
                np.array([e.step for e in events], dtype=int),
                np.array([e.value for e in events], dtype=float),
            )
        records.append(RunRecord(folder.name, _hparams(acc), scalars))
    return records


def _hparams(acc: Any) -> dict[str, HParam]:
    """The hyperparameters stored by ``add_hparams``, from the HParams plugin's data."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    out: dict[str, HParam] = {}
    try:
        contents = acc.PluginTagToContent("hparams")
    except KeyError:  # a run that never called finish()
        return out
    for content in contents.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if not data.HasField("session_start_info"):
            continue
        for name, value in data.session_start_info.hparams.items():
            kind = value.WhichOneof("kind")
            if kind == "number_value":
                number = value.number_value
                out[name] = int(number) if float(number).is_integer() else number
            elif kind == "string_value":
                out[name] = value.string_value
            elif kind == "bool_value":
                out[name] = value.bool_value
    return out


def session_log_dir(name: str, root: str | Path | None = None) -> Path:
    """A new, empty folder ``<root>/<name>-<random>`` for this session's runs.

    ``root`` defaults to the ``OPTLAB_RUNS`` environment variable, or else ``optlab-runs`` in
    the system's temporary folder.
    """
    base = Path(
        root or os.environ.get(RUNS_ROOT_VARIABLE) or Path(tempfile.gettempdir(), "optlab-runs")
    )
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))


def tensorboard_command(log_dir: str | Path) -> str:
    """The shell command that opens TensorBoard on ``log_dir`` (then browse localhost:6006)."""
    return f"tensorboard --logdir {Path(log_dir)}"
