"""Trusted side: compare two recorded runs and describe where they first part ways."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from course_grading.core.runs import Snapshots

# Runs are in float64 and repeat the same arithmetic up to reordering, so honest
# implementations agree to ~1e-13; every mistake in the catalogues differs by far more.
RTOL = 1e-7
ATOL = 1e-9


@dataclass(frozen=True)
class Difference:
    """The first place where two runs differ."""

    step: int
    param: str
    index: tuple[int, ...]
    student: float
    reference: float

    @property
    def abs_diff(self) -> float:
        """``|student - reference|`` at that place."""
        return abs(self.student - self.reference)

    def describe(self, reference_name: str) -> str:
        """One sentence for the student."""
        where = "before the first step" if self.step == 0 else f"after step {self.step}"
        index = ", ".join(map(str, self.index))
        return (
            f"{where}, parameter '{self.param}'[{index}] is {self.student:.10g} with your "
            f"optimizer but {self.reference:.10g} with {reference_name} "
            f"(difference {self.abs_diff:.3g})."
        )


def first_difference(
    student: Snapshots, reference: Snapshots, rtol: float = RTOL, atol: float = ATOL
) -> Difference | None:
    """The earliest step and parameter where ``student`` leaves ``reference``, or ``None``."""
    for step, (mine, ref) in enumerate(zip(student, reference, strict=True)):
        for name, expected in ref.items():
            actual = mine[name]
            if actual.shape != expected.shape:
                return Difference(step, name, (), float("nan"), float("nan"))
            if torch.allclose(actual, expected, rtol=rtol, atol=atol):
                continue
            gap = (actual - expected).abs()
            gap = torch.where(torch.isnan(gap), torch.full_like(gap, float("inf")), gap)
            flat = int(torch.argmax(gap))
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), gap.shape))
            return Difference(
                step, name, index, float(actual.flatten()[flat]), float(expected.flatten()[flat])
            )
    return None
