"""Trusted side: Week 8's cases, tolerances and references.

Tolerances come from bfloat16, which keeps 8 significant bits: its unit roundoff is
``u = 2**-8``. Two correct Newton–Schulz implementations that round differently (``addmm`` or
plain products, bfloat16 or float32) differ from torch's by up to ~12.5 u on a matrix and ~22 u
on a single row or column; every typical mistake is at least twice the tolerance away on the
case meant to catch it. Muon is compared one step at a time from the student's own previous
parameters, relative to the size of torch's step, so that rounding cannot add up over steps.
The cases use well-conditioned or Gaussian matrices: on rank-deficient ones bfloat16 noise in
the null space is amplified up to 3.4445**5 times and correct implementations disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from course_grading.core.references import unguarded
from course_grading.week08.produce import make_matrix, muon_gradient, muon_initial

U_BF16 = 2.0**-8
# Newton–Schulz against torch's function: relative Frobenius error of the output (a single
# row or column: twice this, see ns_tolerance).
TOL_NS = 32 * U_BF16  # 0.125
# Muon: each step against torch's step from the student's previous parameters, relative to
# the size of torch's orthogonalized step.
TOL_MUON = 32 * U_BF16
# The classic iteration run to convergence against the exact polar factor U Vᵀ.
TOL_POLAR = 8 * U_BF16  # 0.031
# The momentum buffer is float32 arithmetic (lerp_ and mul_/add_ differ by ~1 ulp).
TOL_BUFFER = 1e-5
# Adafactor and the factored estimate: no bfloat16 anywhere.
TOL_F64 = 1e-9
TOL_F32 = 1e-4

DEFAULT_NS = (3.4445, -4.775, 2.0315)
# torch.optim.Muon's constructor keywords and defaults in the pinned torch (2.13).
MUON_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.1,
    "momentum": 0.95,
    "nesterov": True,
    "ns_coefficients": DEFAULT_NS,
    "eps": 1e-7,
    "ns_steps": 5,
    "adjust_lr_fn": None,
}


# --- comparisons -------------------------------------------------------------------------------


def rel_err(x: Any, ref: torch.Tensor, floor: float = 0.0) -> float:
    """``||x - ref|| / max(||ref||, floor)`` in float64; ``inf`` for anything but a tensor of
    ``ref``'s shape, or a nan/inf where ``ref`` has none (nan/inf in both count as equal)."""
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(ref.shape):
        return math.inf
    if not x.is_floating_point():
        return math.inf
    x, ref = x.detach().double(), ref.detach().double()
    bad_x, bad_ref = ~torch.isfinite(x), ~torch.isfinite(ref)
    if (bad_x ^ bad_ref).any():
        return math.inf
    diff = torch.where(bad_ref, torch.zeros_like(x), x - ref)
    base = torch.where(bad_ref, torch.zeros_like(ref), ref)
    denom = max(base.norm().item(), floor)
    if denom > 0:
        return diff.norm().item() / denom
    return 0.0 if diff.norm().item() == 0 else math.inf


def step_error(p: Any, target: torch.Tensor, size: float) -> float:
    """``||p - target|| / size``; nan/inf in both count as equal, anything else is ``inf``."""
    if not isinstance(p, torch.Tensor) or tuple(p.shape) != tuple(target.shape):
        return math.inf
    if not p.is_floating_point():
        return math.inf
    bad_p, bad_t = ~torch.isfinite(p), ~torch.isfinite(target)
    if (bad_p ^ bad_t).any():
        return math.inf
    diff = torch.where(bad_p, 0.0, p.double() - target.double())
    return diff.norm().item() / size


# --- newton_schulz -----------------------------------------------------------------------------


def torch_ns(
    G: torch.Tensor, steps: int = 5, coefficients: Sequence[float] = DEFAULT_NS, eps: float = 1e-7
) -> torch.Tensor:
    """The reference: torch's own Newton–Schulz (private to torch.optim._muon), bfloat16."""
    from torch.optim import _muon

    return _muon._zeropower_via_newtonschulz(G, tuple(coefficients), steps, eps)


def polar(G: torch.Tensor) -> torch.Tensor:
    """The exact polar factor U Vᵀ of G (float64)."""
    u, _, vh = torch.linalg.svd(G.double(), full_matrices=False)
    return u @ vh


@dataclass(frozen=True)
class NSCase:
    """One input of the Newton–Schulz checks: a matrix and the iteration's settings."""

    label: str
    shape: tuple[int, int]
    kind: str
    scale: float = 1.0
    seed: int = 0
    steps: int = 5
    coefficients: tuple[float, float, float] = DEFAULT_NS
    eps: float = 1e-7

    def request(self) -> dict[str, Any]:
        """The case as the sandbox gets it (the label stays here)."""
        return {
            "shape": self.shape,
            "kind": self.kind,
            "scale": self.scale,
            "seed": self.seed,
            "steps": self.steps,
            "coefficients": self.coefficients,
            "eps": self.eps,
        }

    def matrix(self) -> torch.Tensor:
        return make_matrix(self.shape, self.kind, self.seed, self.scale)


CLASSIC = (1.5, -0.5, 0.0)
# newton_schulz_test_reference (2 points): against torch's function.
NS_REFERENCE_CASES = (
    NSCase("a wide Gaussian matrix", (16, 48), "gaussian", seed=1),
    NSCase("a tall Gaussian matrix", (48, 16), "gaussian", seed=2),
    NSCase("a square well-conditioned matrix", (32, 32), "conditioned", seed=3),
    NSCase("a tall matrix with tiny entries", (64, 24), "conditioned", 1e-4, seed=4),
    NSCase("a wide matrix with large entries", (20, 100), "gaussian", 1e3, seed=5),
    NSCase("a matrix with one row", (1, 40), "gaussian", seed=6),
    NSCase("3 steps", (24, 40), "gaussian", seed=8, steps=3),
    NSCase("8 steps", (40, 24), "gaussian", seed=9, steps=8),
    NSCase(
        "other coefficients (3, -3.2, 1.2)",
        (16, 40),
        "gaussian",
        seed=10,
        coefficients=(3.0, -3.2, 1.2),
    ),
)
# newton_schulz_test_polar (1 point): the classic cubic, run to convergence, gives U Vᵀ.
NS_POLAR_CASES = (
    NSCase(
        "classic coefficients, 30 steps, wide",
        (16, 48),
        "conditioned",
        seed=11,
        steps=30,
        coefficients=CLASSIC,
    ),
    NSCase(
        "classic coefficients, 30 steps, tall",
        (48, 16),
        "conditioned",
        1e2,
        seed=12,
        steps=30,
        coefficients=CLASSIC,
    ),
    NSCase(
        "classic coefficients, 30 steps, square",
        (24, 24),
        "conditioned",
        1e-2,
        seed=13,
        steps=30,
        coefficients=CLASSIC,
    ),
)
# newton_schulz_test_shapes (1 point): the shape kept, a zero matrix, a column.
NS_SHAPE_CASES = (
    NSCase("a zero matrix", (8, 5), "zero"),
    NSCase("a zero matrix, wide", (5, 8), "zero"),
    NSCase("a tall 30x7 matrix", (30, 7), "gaussian", seed=14),
    NSCase("a column 12x1", (12, 1), "gaussian", seed=15),
)


def ns_tolerance(case: NSCase, against: str) -> float:
    """A matrix with one row or column has one singular value, which sits where the iterated
    polynomial is steepest: its rounding spread is twice a matrix's (22 u measured vs 12.5 u)."""
    if against == "polar":
        return TOL_POLAR
    return 2 * TOL_NS if min(case.shape) == 1 else TOL_NS


def ns_reference(case: NSCase, against: str) -> torch.Tensor:
    """What a case's output is compared with: torch's result, or the exact U Vᵀ."""
    G = case.matrix()
    if against == "polar":
        return polar(G)
    return torch_ns(G, case.steps, case.coefficients, case.eps).float()


# --- Muon --------------------------------------------------------------------------------------


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: Sequence[int]) -> float:
    """torch.optim.Muon's learning rate for a matrix of ``shape`` (torch's ``_adjust_lr``)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


@dataclass(frozen=True)
class MuonCase:
    """Parameters (one per shape), param groups, gradients and steps of one Muon check.

    ``hyper`` holds the constructor's keywords; ``groups``, if given, the param groups as
    ``{"params": (indices), **overrides}``. ``frozen`` parameters get no gradient;
    ``resume_at`` makes a ``state_dict`` round trip into a new optimizer after that many steps.
    """

    label: str
    shapes: tuple[tuple[int, int], ...]
    hyper: dict[str, Any] = field(default_factory=dict)
    groups: tuple[dict[str, Any], ...] | None = None
    steps: int = 10
    kind: str = "gaussian"
    grad_scale: float = 1.0
    param_scale: float = 1.0
    seed: int = 0
    frozen: tuple[int, ...] = ()
    zero_first: bool = False
    resume_at: int | None = None

    def request(self) -> dict[str, Any]:
        """The case as the sandbox gets it, with each parameter's momentum and Newton–Schulz
        settings resolved (for the student's newton_schulz of torch's directions)."""
        keys = ("momentum", "nesterov", "ns_steps", "ns_coefficients", "eps")
        return {
            "shapes": self.shapes,
            "hyper": dict(self.hyper),
            "groups": None if self.groups is None else [dict(g) for g in self.groups],
            "steps": self.steps,
            "kind": self.kind,
            "grad_scale": self.grad_scale,
            "param_scale": self.param_scale,
            "seed": self.seed,
            "frozen": self.frozen,
            "zero_first": self.zero_first,
            "resume_at": self.resume_at,
            "directions": [{k: self.hyper_of(i)[k] for k in keys} for i in range(len(self.shapes))],
        }

    def hyper_of(self, i: int) -> dict[str, Any]:
        """Every hyperparameter of parameter ``i``, as torch's Muon resolves them."""
        for spec in self.group_specs():
            if i in spec["params"]:
                overrides = {k: v for k, v in spec.items() if k != "params"}
                return {**MUON_DEFAULTS, **self.hyper, **overrides}
        raise KeyError(i)

    def group_specs(self) -> list[dict[str, Any]]:
        if self.groups is None:
            return [{"params": tuple(range(len(self.shapes)))}]
        return [dict(g) for g in self.groups]

    def initial(self) -> list[torch.Tensor]:
        return muon_initial(self.request())

    def gradients(self) -> list[list[torch.Tensor | None]]:
        """``[step][parameter]``: every gradient of the case."""
        request = self.request()
        return [
            [muon_gradient(request, t, i) for i in range(len(self.shapes))]
            for t in range(self.steps)
        ]


# Each test cell's cases; a cell with state=True also compares the final momentum buffers.
MUON_CASES: dict[str, tuple[MuonCase, ...]] = {
    # Defaults (lr 1e-3, decay 0.1, momentum 0.95, Nesterov, adjust None): tall, wide, square.
    "muon_test_basic": (
        MuonCase(
            "default hyperparameters, a tall, a wide and a square matrix",
            ((48, 16), (16, 48), (32, 32)),
            steps=12,
            seed=1,
        ),
        MuonCase(
            "default hyperparameters, gradients 1000x smaller",
            ((40, 24), (24, 40)),
            steps=8,
            grad_scale=1e-3,
            seed=2,
        ),
    ),
    # Step 1 cannot tell Nesterov apart (both directions are multiples of g1): from step 2 on.
    "muon_test_nesterov": (
        MuonCase(
            "nesterov=False, momentum 0.9",
            ((24, 64), (64, 24)),
            {"nesterov": False, "momentum": 0.9, "lr": 0.02},
            steps=10,
            seed=3,
        ),
        MuonCase(
            "nesterov=True, momentum 0.5",
            ((24, 64), (64, 24)),
            {"momentum": 0.5, "lr": 0.02},
            steps=10,
            seed=4,
        ),
    ),
    # Large weight decays, so that the decay's mistakes are large next to the step.
    "muon_test_adjust_lr": (
        MuonCase(
            'adjust_lr_fn="original", weight decay 1',
            ((64, 16), (16, 64)),
            {"adjust_lr_fn": "original", "lr": 0.02, "weight_decay": 1.0},
            steps=6,
            seed=5,
        ),
        MuonCase(
            'adjust_lr_fn="match_rms_adamw", weight decay 1',
            ((64, 16), (16, 64)),
            {"adjust_lr_fn": "match_rms_adamw", "lr": 0.02, "weight_decay": 1.0},
            steps=6,
            seed=6,
        ),
        MuonCase(
            "adjust_lr_fn=None, lr 0.1 and weight decay 5",
            ((48, 24), (24, 48)),
            {"lr": 0.1, "weight_decay": 5.0},
            steps=6,
            seed=7,
        ),
    ),
    "muon_test_ns_settings": (
        MuonCase("ns_steps=2", ((20, 40), (40, 20)), {"ns_steps": 2, "lr": 0.02}, steps=6, seed=8),
        MuonCase(
            "classic coefficients (1.5, -0.5, 0), 12 steps",
            ((40, 20),),
            {"ns_coefficients": CLASSIC, "ns_steps": 12, "lr": 0.02},
            steps=6,
            seed=9,
        ),
        MuonCase(
            "eps=1 with small gradients",
            ((24, 48),),
            {"eps": 1.0, "lr": 0.02},
            steps=6,
            grad_scale=0.003,
            seed=10,
        ),
        MuonCase(
            "a zero first gradient", ((16, 32),), {"lr": 0.02}, steps=4, seed=11, zero_first=True
        ),
    ),
    "muon_test_groups_frozen": (
        MuonCase(
            "two param groups and a frozen matrix",
            ((32, 16), (16, 32), (24, 24)),
            {"lr": 0.02},
            groups=(
                {
                    "params": (0,),
                    "lr": 0.05,
                    "nesterov": False,
                    "adjust_lr_fn": "match_rms_adamw",
                },
                {"params": (1, 2), "momentum": 0.8},
            ),
            steps=8,
            seed=12,
            frozen=(2,),
        ),
        MuonCase(
            "state_dict saved and loaded after 4 of 8 steps",
            ((32, 16), (16, 48)),
            {"lr": 0.02},
            steps=8,
            seed=13,
            resume_at=4,
        ),
    ),
}
MUON_STATE_CELLS = ("muon_test_groups_frozen",)

# muon_test_validation: parameters that are not matrices (any ValueError will do) ...
MUON_SHAPE_CALLS = (
    ("a 1-D parameter", {"groups": [[(5,)]], "as_groups": False}),
    ("a 3-D parameter", {"groups": [[(2, 3, 4)]], "as_groups": False}),
    ("a 1-D parameter in a second param group", {"groups": [[(3, 3)], [(3,)]], "as_groups": True}),
)
# ... and hyperparameters: the ValueError must name the parameter.
MUON_INVALID = (
    ({"lr": -0.01}, ("lr", "learning rate")),
    ({"momentum": -0.5}, ("momentum",)),
    ({"weight_decay": -0.1}, ("weight_decay", "weight decay")),
    ({"adjust_lr_fn": "sqrt"}, ("adjust_lr_fn", "adjust learning rate", "sqrt")),
)
MUON_VALID = (
    {"adjust_lr_fn": "original"},
    {"adjust_lr_fn": "match_rms_adamw"},
    {"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0},
)


def torch_muon_step(
    p_prev: torch.Tensor, buffer: torch.Tensor | None, grad: torch.Tensor, hyper: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.optim.Muon's step from ``p_prev`` with momentum buffer ``buffer`` (None: none
    yet): the new parameter and the new buffer."""
    q = p_prev.detach().clone().float().requires_grad_()
    optimizer = unguarded(torch.optim.Muon)([q], **hyper)
    if buffer is not None:
        optimizer.state[q]["momentum_buffer"] = buffer.clone()
    q.grad = grad.clone()
    optimizer.step()
    return q.detach().clone(), optimizer.state[q]["momentum_buffer"].clone()


# --- split_params ------------------------------------------------------------------------------

_NO_BIAS_MLP = [["linear", 8, 16, False], ["tanh"], ["linear", 16, 16, False], ["tanh"],
                ["linear", 16, 3, False]]  # fmt: skip
_NORM_MLP = [["linear", 10, 20, True], ["layernorm", 20], ["relu"], ["linear", 20, 20, True],
             ["layernorm", 20], ["relu"], ["linear", 20, 5, True]]  # fmt: skip
# Every model of the split checks (each cell grades some; the diagnosis looks at all, since
# "every 2-D parameter" and "the output layer too" coincide on MLPs).
SPLIT_MODELS: dict[str, dict[str, Any]] = {
    "mlp (64, 32, 10)": {"kind": "mlp", "sizes": [64, 32, 10]},
    "mlp (64, 128, 128, 10)": {"kind": "mlp", "sizes": [64, 128, 128, 10]},
    "a single linear layer": {"kind": "mlp", "sizes": [64, 10]},
    "an mlp without biases": {"kind": "layers", "layers": _NO_BIAS_MLP},
    "a small transformer": {"kind": "transformer", "bias": True},
    "a transformer without biases": {"kind": "transformer", "bias": False},
    "a conv net with batch norm": {"kind": "convnet"},
    "an mlp with LayerNorm": {"kind": "layers", "layers": _NORM_MLP},
}
SPLIT_CELLS = {
    "split_params_test_mlp": (
        "mlp (64, 32, 10)",
        "mlp (64, 128, 128, 10)",
        "a single linear layer",
        "an mlp without biases",
    ),
    "split_params_test_models": (
        "a small transformer",
        "a transformer without biases",
        "a conv net with batch norm",
        "an mlp with LayerNorm",
    ),
}


def split_reference(model: torch.nn.Module) -> tuple[list, list]:
    """The rule the notebook teaches: hidden nn.Linear weights to Muon, the rest to AdamW."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    hidden = {id(m.weight) for m in linears[:-1]}
    return (
        [p for p in model.parameters() if id(p) in hidden],
        [p for p in model.parameters() if id(p) not in hidden],
    )


def names_of(model: torch.nn.Module, lists: tuple[Sequence, Sequence]) -> tuple[list, list]:
    """The parameter names in each of two lists of parameters."""
    naming = {id(p): name for name, p in model.named_parameters()}
    return [naming[id(p)] for p in lists[0]], [naming[id(p)] for p in lists[1]]


# --- factored_second_moment and the Adafactor class --------------------------------------------


@dataclass(frozen=True)
class FactoredCase:
    """Calls of ``factored_second_moment`` from zero averages, ``steps`` times."""

    label: str
    shape: tuple[int, ...]
    steps: int = 5
    beta2_decay: float = -0.8
    eps1: float = 1e-30
    seed: int = 0
    zero_first: bool = False
    dtype: str = "float64"

    def request(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "steps": self.steps,
            "beta2_decay": self.beta2_decay,
            "eps1": self.eps1,
            "seed": self.seed,
            "zero_first": self.zero_first,
            "dtype": self.dtype,
        }


FACTORED_CASES = (
    FactoredCase("a 5x7 gradient over 5 steps", (5, 7), seed=1),
    FactoredCase("a 7x5 gradient over 5 steps", (7, 5), seed=2),
    FactoredCase("a 6x6 gradient over 5 steps", (6, 6), seed=3),
    FactoredCase("a 3-D gradient 2x4x3 (factored over the last two dimensions)", (2, 4, 3), seed=4),
    FactoredCase("beta2_decay=-0.5, eps1=1e-3", (4, 9), beta2_decay=-0.5, eps1=1e-3, seed=5),
    FactoredCase("a zero first gradient", (4, 4), seed=6, zero_first=True),
)


def factored_reference(
    row_var: torch.Tensor,
    col_var: torch.Tensor,
    grad: torch.Tensor,
    one_minus_beta2: float,
    eps1: float,
) -> torch.Tensor:
    """torch.optim.Adafactor's matrix branch, as torch/optim/_adafactor.py computes it."""
    row_mean = torch.norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1))
    row_var.lerp_(row_mean, one_minus_beta2)
    col_mean = torch.norm(grad, dim=-2, keepdim=True).square_().div_(grad.size(-2))
    col_var.lerp_(col_mean, one_minus_beta2)
    var_estimate = row_var @ col_var
    return var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))


@dataclass(frozen=True)
class AdafactorCase:
    """The notebook's Adafactor against torch's, step by step."""

    label: str
    shapes: tuple[tuple[int, ...], ...]
    hyper: dict[str, Any] = field(default_factory=dict)
    steps: int = 8
    seed: int = 0
    dtype: str = "float64"
    zero_first: bool = False

    def request(self) -> dict[str, Any]:
        return {
            "shapes": self.shapes,
            "hyper": dict(self.hyper),
            "steps": self.steps,
            "seed": self.seed,
            "dtype": self.dtype,
            "zero_first": self.zero_first,
        }

    @property
    def tolerance(self) -> float:
        return TOL_F64 if self.dtype == "float64" else TOL_F32


ADAFACTOR_CASES = (
    AdafactorCase("defaults: a matrix, a vector, a 3-D tensor", ((6, 4), (5,), (2, 3, 4)), seed=1),
    AdafactorCase(
        "lr 0.1, weight decay 0.1, maximize",
        ((4, 8), (8,)),
        {"lr": 0.1, "weight_decay": 0.1, "maximize": True},
        seed=2,
    ),
    AdafactorCase(
        "beta2_decay -0.5, eps (1e-3, 1e-2), d 2",
        ((8, 3),),
        {"beta2_decay": -0.5, "eps": (1e-3, 1e-2), "d": 2.0},
        seed=3,
    ),
    AdafactorCase("float32", ((6, 6), (6,)), seed=4, dtype="float32"),
    AdafactorCase("a zero first gradient", ((5, 3),), seed=5, zero_first=True),
)


# --- optimizer_state_bytes ---------------------------------------------------------------------

MEMORY_NAMES = ("AdamW", "Adafactor", "Muon")
MEMORY_SHAPES = ((1000,), (64, 32), (32, 64), (7,), (128, 128), (4, 3, 5), (16, 8, 3, 3),
                 (50257, 768), (1,))  # fmt: skip
MEMORY_DTYPES = (torch.float32, torch.bfloat16, torch.float64, torch.float16)
MEMORY_GRID = tuple(
    (name, shape, dtype)
    for name in MEMORY_NAMES
    for shape in MEMORY_SHAPES
    for dtype in MEMORY_DTYPES
)
# optimizer_state_bytes_test_own: the student's Muon (two param groups) and the notebook's
# Adafactor after one step on this mlp, in float32 and in bfloat16.
MEMORY_OWN = {
    "sizes": (64, 32, 16, 10),
    "dtypes": ("float32", "bfloat16"),
    "muon_groups": ({"layers": (0,)}, {"layers": (2,), "lr": 0.01}),
}
# What an answer that raised ValueError is compared as.
RAISES = "ValueError"


def memory_reference(name: str, shape: Sequence[int], dtype: torch.dtype) -> int | str:
    """Bytes of state torch's optimizer keeps for one parameter after a step (with the default
    dtype float32: the step count is a 0-d float32 tensor); ``RAISES`` where it refuses.

    The tests check these against ``optlab.memory.measure_state`` of the real optimizers.
    """
    shape = tuple(shape)
    numel, size = math.prod(shape), dtype.itemsize
    if name in ("Adam", "AdamW"):
        return 2 * numel * size + 4
    if name == "Adafactor":
        if len(shape) > 1:
            return (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]) * size + 4
        return numel * size + 4
    if name == "Muon":
        return numel * size if len(shape) == 2 else RAISES
    raise KeyError(name)
