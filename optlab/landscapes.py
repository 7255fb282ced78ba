"""Loss landscapes with analytic gradients and known minima.

Every landscape maps a point (a 1-D torch tensor) to a scalar loss, gives the exact gradient
by a hand-derived formula (tests check it against autograd), and knows where its global minimum
is, so plots can mark the target and runs can measure how far they still are from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "Landscape",
    "DipCurve",
    "Quadratic",
    "Rosenbrock",
    "Bumpy",
    "LANDSCAPES",
    "get_landscape",
]


@dataclass(frozen=True)
class Landscape:
    """Base class: a named loss surface over ``dim`` coordinates.

    Subclasses implement :meth:`loss` and :meth:`grad` for a point ``x`` of shape ``(dim,)``;
    :meth:`loss` must accept a batch ``(..., dim)`` too, which the contour plots use.
    """

    name: str
    dim: int
    minimum: tuple[float, ...]
    start: tuple[float, ...]
    bounds: tuple[tuple[float, float], ...]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Loss at ``x`` (shape ``(..., dim)``), reduced over the last axis."""
        raise NotImplementedError

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """Exact gradient of :meth:`loss` at a single point ``x`` of shape ``(dim,)``."""
        raise NotImplementedError

    @property
    def minimum_loss(self) -> float:
        """Loss value at the global minimum."""
        return float(self.loss(torch.tensor(self.minimum, dtype=torch.float64)))


@dataclass(frozen=True)
class DipCurve(Landscape):
    """A 1-D valley with a shallow dip on the way down.

    ``f(x) = a (x - c)^2 - depth * exp(-(x - c)^2) - dip * exp(-((x - d) / w)^2)``.
    Started left of the dip, plain gradient descent settles in the dip (a local minimum near
    ``x = d``); a heavy ball with momentum keeps enough speed to roll over its rim and reach the
    deep valley at ``x = c``.
    """

    name: str = "dip"
    dim: int = 1
    minimum: tuple[float, ...] = (2.0,)
    start: tuple[float, ...] = (-3.0,)
    bounds: tuple[tuple[float, float], ...] = ((-3.5, 4.0),)
    a: float = 0.08
    depth: float = 1.0
    dip: float = 0.35
    dip_center: float = -1.0
    dip_width: float = 0.35

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., 0]
        c, d, w = self.minimum[0], self.dip_center, self.dip_width
        return (
            self.a * (x - c) ** 2
            - self.depth * torch.exp(-((x - c) ** 2))
            - self.dip * torch.exp(-(((x - d) / w) ** 2))
        )

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[0]
        c, d, w = self.minimum[0], self.dip_center, self.dip_width
        g = (
            2 * self.a * (x0 - c)
            + 2 * self.depth * (x0 - c) * torch.exp(-((x0 - c) ** 2))
            + 2 * self.dip * (x0 - d) / w**2 * torch.exp(-(((x0 - d) / w) ** 2))
        )
        return g.reshape(1)


@dataclass(frozen=True)
class Quadratic(Landscape):
    """``f(x) = 1/2 (x - m)^T H (x - m)`` with Hessian ``H = R diag(eigenvalues) R^T``.

    With very different eigenvalues this is a narrow ravine: steep across, flat along. ``angle``
    (radians) rotates the ravine away from the axes.
    """

    name: str = "ravine"
    dim: int = 2
    minimum: tuple[float, ...] = (0.0, 0.0)
    start: tuple[float, ...] = (-4.0, 1.5)
    bounds: tuple[tuple[float, float], ...] = ((-5.0, 5.0), (-2.5, 2.5))
    eigenvalues: tuple[float, float] = (1.0, 20.0)
    angle: float = 0.0

    @property
    def hessian(self) -> torch.Tensor:
        """The constant Hessian matrix ``H`` (float64)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        return rot @ torch.diag(torch.tensor(self.eigenvalues, dtype=torch.float64)) @ rot.T

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hessian.to(x.dtype)
        d = x - torch.tensor(self.minimum, dtype=x.dtype)
        return 0.5 * ((d @ h) * d).sum(-1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hessian.to(x.dtype)
        return h @ (x - torch.tensor(self.minimum, dtype=x.dtype))


@dataclass(frozen=True)
class Rosenbrock(Landscape):
    """``f(x, y) = (a - x)^2 + b (y - x^2)^2``: a curved, flat-bottomed banana valley."""

    name: str = "rosenbrock"
    dim: int = 2
    minimum: tuple[float, ...] = (1.0, 1.0)
    start: tuple[float, ...] = (-1.5, 2.0)
    bounds: tuple[tuple[float, float], ...] = ((-2.0, 2.0), (-1.0, 3.0))
    a: float = 1.0
    b: float = 100.0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        u, v = x[..., 0], x[..., 1]
        return (self.a - u) ** 2 + self.b * (v - u**2) ** 2

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        u, v = x[0], x[1]
        du = -2 * (self.a - u) - 4 * self.b * u * (v - u**2)
        dv = 2 * self.b * (v - u**2)
        return torch.stack([du, dv])


@dataclass(frozen=True)
class Bumpy(Landscape):
    """A bowl covered in bumps: ``s |x|^2 + r * sum(1 - cos(k x_i))``.

    Every bump is a local minimum; the global one is at the origin, where the loss is 0.
    """

    name: str = "bumpy"
    dim: int = 2
    minimum: tuple[float, ...] = (0.0, 0.0)
    start: tuple[float, ...] = (-4.0, 3.5)
    bounds: tuple[tuple[float, float], ...] = ((-5.0, 5.0), (-5.0, 5.0))
    bowl: float = 0.05
    ripple: float = 0.4
    frequency: float = 2.0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return (self.bowl * x**2 + self.ripple * (1 - torch.cos(self.frequency * x))).sum(-1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.bowl * x + self.ripple * self.frequency * torch.sin(self.frequency * x)


LANDSCAPES: dict[str, Landscape] = {
    "dip": DipCurve(),
    "ravine": Quadratic(),
    "rosenbrock": Rosenbrock(),
    "bumpy": Bumpy(),
}


def get_landscape(name: str) -> Landscape:
    """Return the landscape registered under ``name`` (one of :data:`LANDSCAPES`)."""
    try:
        return LANDSCAPES[name]
    except KeyError:
        raise ValueError(
            f"unknown landscape {name!r}; choose one of {sorted(LANDSCAPES)}"
        ) from None
