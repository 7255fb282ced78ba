"""Race optimizers on a small training task: loss per step and per second, steps to a target.

A run trains one model with one or more optimizers stepping together (Muon for the hidden
matrices and AdamW for the rest, say), measures the loss on a fixed evaluation set every few
steps, and times only the training steps. A sweep repeats a run for several learning rates, with
one progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn.functional import cross_entropy
from tqdm.auto import tqdm

from optlab.plots import COLORS

__all__ = ["RunRecord", "train_run", "sweep", "best_run", "plot_runs"]

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RunRecord:
    """Evaluation losses of one run, at ``steps``, after ``seconds`` of training steps."""

    label: str
    steps: np.ndarray
    seconds: np.ndarray
    losses: np.ndarray

    def steps_to(self, target: float) -> int | None:
        """The first measured step at which the loss is at or below ``target`` (None: never)."""
        hit = np.flatnonzero(self.losses <= target)
        return int(self.steps[hit[0]]) if hit.size else None

    def seconds_to(self, target: float) -> float | None:
        """Training seconds until the loss is at or below ``target`` (None: never)."""
        hit = np.flatnonzero(self.losses <= target)
        return float(self.seconds[hit[0]]) if hit.size else None


def _evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> float:
    with torch.no_grad():
        return float(loss_fn(model(X), y))


def train_run(
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    batches: Sequence[Batch],
    X_eval: torch.Tensor,
    y_eval: torch.Tensor,
    eval_every: int = 10,
    label: str = "",
    loss_fn: LossFn = cross_entropy,
    progress: bool = True,
) -> RunRecord:
    """Train on ``batches`` with all ``optimizers`` stepping together; record the loss curve."""
    steps, seconds, losses = [0], [0.0], [_evaluate(model, X_eval, y_eval, loss_fn)]
    elapsed = 0.0
    bar = tqdm(batches, desc=label or "training", leave=False, disable=not progress)
    for step, (X, y) in enumerate(bar, start=1):
        start = time.perf_counter()
        for opt in optimizers:
            opt.zero_grad()
        loss_fn(model(X), y).backward()
        for opt in optimizers:
            opt.step()
        elapsed += time.perf_counter() - start
        if step % eval_every == 0 or step == len(batches):
            steps.append(step)
            seconds.append(elapsed)
            losses.append(_evaluate(model, X_eval, y_eval, loss_fn))
    return RunRecord(label, np.array(steps), np.array(seconds), np.array(losses))


class RunOptions(TypedDict, total=False):
    """What :func:`sweep` passes on to each :func:`train_run` (defaults: ``train_run``'s)."""

    eval_every: int
    loss_fn: LossFn


def sweep(
    make_model: Callable[[], nn.Module],
    make_optimizers: Callable[[nn.Module, float], Sequence[torch.optim.Optimizer]],
    lrs: Sequence[float],
    batches: Sequence[Batch],
    X_eval: torch.Tensor,
    y_eval: torch.Tensor,
    label: str = "",
    progress: bool = True,
    **run_options: Unpack[RunOptions],
) -> dict[float, RunRecord]:
    """One run per learning rate, each from a fresh ``make_model()``; one progress bar in all.

    ``label`` prefixes each run's label; ``eval_every`` and ``loss_fn`` go to every run.
    """
    records: dict[float, RunRecord] = {}
    bar = tqdm(total=len(lrs), desc=label or "sweep", disable=not progress)
    for lr in lrs:
        bar.set_postfix(lr=f"{lr:g}")
        model = make_model()
        run_label = f"{label} lr={lr:g}".strip()
        records[lr] = train_run(
            model, make_optimizers(model, lr), batches, X_eval, y_eval,
            label=run_label, progress=False, **run_options,
        )  # fmt: skip
        bar.update(1)
    bar.close()
    return records


def best_run(records: Mapping[float, RunRecord], target: float) -> tuple[float, RunRecord]:
    """The learning rate and run that reach ``target`` in the fewest steps (else lowest loss)."""

    def key(item: tuple[float, RunRecord]) -> tuple[float, float]:
        reached = item[1].steps_to(target)
        return (reached if reached is not None else np.inf, float(item[1].losses[-1]))

    return min(records.items(), key=key)


def plot_runs(records: Mapping[str, RunRecord], target: float | None = None) -> Figure:
    """Loss against steps (left) and against seconds of training (right), log scale."""
    fig, (ax_steps, ax_time) = plt.subplots(
        1, 2, figsize=(9.5, 3.4), layout="constrained", sharey=True
    )
    for color, (name, rec) in zip(COLORS, records.items(), strict=False):
        ax_steps.semilogy(rec.steps, rec.losses, color=color, label=name)
        ax_time.semilogy(rec.seconds, rec.losses, color=color, label=name)
    if target is not None:
        for ax in (ax_steps, ax_time):
            ax.axhline(target, color="0.4", ls=":", lw=1, label=f"target {target:g}")
    ax_steps.set_xlabel("step")
    ax_time.set_xlabel("seconds of training")
    ax_steps.set_ylabel("training loss")
    ax_steps.legend(fontsize=8)
    return fig
