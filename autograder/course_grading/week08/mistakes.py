"""Trusted side: Week 8's catalogues of typical mistakes, named in the feedback.

Each :class:`Mistake` is a rule that makes exactly one typical error; a failing check runs the
rules on the same inputs and names the one that reproduces the student's results:

- ``newton_schulz``: wrong Newton–Schulz functions ``(G, steps, coefficients, eps) -> X``;
- ``muon``: wrong Muon updates ``rule(p, grad, state, group)``, compared one step at a time
  from the student's own parameters; :data:`MUON_DIRECT` holds the mistakes seen in the state
  or the constructor's behaviour, and :data:`OWN_NS_SENTENCE` says that only the student's own
  ``newton_schulz`` is wrong;
- ``split_params``: wrong splits ``model -> (muon_params, adamw_params)``;
- ``factored_second_moment``: wrong functions of ``(row_var, col_var, grad, one_minus_beta2,
  eps1)``;
- ``optimizer_state_bytes``: wrong counts ``(name, shape, dtype) -> bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from course_grading.core.mistakes import Mistake
from course_grading.week08.cases import DEFAULT_NS, split_reference

# --- newton_schulz -----------------------------------------------------------------------------


def ns_variant(
    dtype: torch.dtype = torch.bfloat16,
    plain: bool = True,
    transpose: bool = True,
    normalize: str = "fro",
    offset: int = 0,
    quintic: str = "A@A",
    transpose_back: bool = True,
) -> Callable[..., torch.Tensor]:
    """Newton–Schulz written many ways: correct roundings and the typical mistakes."""

    def ns(
        G: torch.Tensor, steps: int = 5, coefficients: Any = DEFAULT_NS, eps: float = 1e-7
    ) -> torch.Tensor:
        a, b, c = coefficients
        X = G.to(dtype)
        tall = G.size(0) > G.size(1)
        if tall and transpose:
            X = X.T
        if normalize == "fro":
            X = X / X.norm().clamp(min=eps)
        elif normalize == "fro_no_eps":
            X = X / X.norm()
        elif normalize == "spectral":
            X = X / torch.linalg.matrix_norm(X.float(), 2).clamp(min=eps).to(dtype)
        for _ in range(steps + offset):
            A = X @ X.T
            A2 = A @ A if quintic == "A@A" else A
            if plain or quintic != "A@A":
                X = a * X + (b * A + c * A2) @ X
            else:
                X = torch.addmm(X, torch.addmm(A, A, A, beta=b, alpha=c), X, beta=a)
        if tall and transpose and transpose_back:
            X = X.T
        return X

    return ns


NS_MISTAKES = (
    Mistake(
        "newton_schulz/no_normalization",
        "G is not divided by its Frobenius norm before the iteration, so its singular values are "
        "not in (0, 1] and the polynomial sends them to the wrong place (or to infinity).",
        ns_variant(plain=False, normalize="none"),
    ),
    Mistake(
        "newton_schulz/one_step_short",
        "the loop runs one iteration fewer than `steps`.",
        ns_variant(plain=False, offset=-1),
    ),
    Mistake(
        "newton_schulz/one_step_extra",
        "the loop runs one iteration more than `steps`.",
        ns_variant(plain=False, offset=+1),
    ),
    Mistake(
        "newton_schulz/no_eps",
        "the norm is not clamped at eps before dividing: a zero matrix gives 0/0 = nan instead "
        "of zeros.",
        ns_variant(plain=False, normalize="fro_no_eps"),
    ),
    Mistake(
        "newton_schulz/quintic_term_wrong",
        "the quintic term uses A instead of A @ A: B must be b·A + c·A·A, with A = X Xᵀ.",
        ns_variant(plain=True, quintic="A"),
    ),
    Mistake(
        "newton_schulz/spectral_norm",
        "G is divided by its spectral norm; torch.optim.Muon divides by the Frobenius norm "
        "(G.norm()), which moves every singular value to a different place on the polynomial.",
        ns_variant(plain=False, normalize="spectral"),
    ),
    Mistake(
        "newton_schulz/not_transposed_back",
        "a tall matrix is transposed for the iteration but not transposed back: the result must "
        "have G's shape.",
        ns_variant(plain=False, transpose_back=False),
    ),
)


# torch's Newton–Schulz written out (addmm in bfloat16): the same bits as torch's private
# function, which the rules must not call (it is switched off while a student's code runs,
# and the tests run the rules as a student's Muon).
TORCH_NS = ns_variant(plain=False)


# --- Muon --------------------------------------------------------------------------------------


def muon_rule(
    ns: Callable[..., torch.Tensor] = TORCH_NS,
    nesterov: str = "as_given",
    buffer: str = "lerp",
    adjust: str = "torch",
    decay: str = "raw_lr",
    ns_settings: str = "from_group",
) -> Callable[[torch.Tensor, torch.Tensor, dict, dict], None]:
    """torch's Muon update of one matrix, with the deviations the keywords name."""

    def rule(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf = state["momentum_buffer"]
        if buffer == "lerp":
            buf.lerp_(g, 1 - mu)
        elif buffer == "sgd":
            buf.mul_(mu).add_(g)
        else:  # "mul_add": the same average, rounded differently
            buf.mul_(mu).add_(g, alpha=1 - mu)
        use_nesterov = {"as_given": group["nesterov"], "ignored": False, "always": True}[nesterov]
        update = g.lerp(buf, mu) if use_nesterov else buf
        if ns_settings == "from_group":
            ortho = ns(update, group["ns_steps"], group["ns_coefficients"], group["eps"])
        else:
            ortho = ns(update, 5, DEFAULT_NS, 1e-7)
        rows, cols = p.shape
        match = group["adjust_lr_fn"] == "match_rms_adamw"
        if adjust == "none":
            ratio = 1.0
        elif match and adjust in ("torch", "inverted"):
            ratio = 0.2 * math.sqrt(max(rows, cols))
        elif match and adjust == "match_min":
            ratio = 0.2 * math.sqrt(min(rows, cols))
        elif adjust == "inverted":
            ratio = math.sqrt(max(1, cols / rows))
        else:  # torch's original adjustment (also for "match_ignored")
            ratio = math.sqrt(max(1, rows / cols))
        step_lr = lr * ratio
        if decay == "raw_lr":
            p.mul_(1 - lr * wd)
            p.add_(ortho, alpha=-step_lr)
        elif decay == "adjusted_lr":
            p.mul_(1 - step_lr * wd)
            p.add_(ortho, alpha=-step_lr)
        elif decay == "after":
            p.add_(ortho, alpha=-step_lr)
            p.mul_(1 - lr * wd)
        elif decay == "no_lr":
            p.mul_(1 - wd)
            p.add_(ortho, alpha=-step_lr)
        else:  # "none"
            p.add_(ortho, alpha=-step_lr)

    return rule


MUON_MISTAKES = (
    Mistake(
        "muon/nesterov_ignored",
        "Nesterov is ignored: with nesterov=True the update is grad.lerp(buf, momentum), "
        "not the momentum buffer itself.",
        muon_rule(nesterov="ignored"),
    ),
    Mistake(
        "muon/nesterov_always",
        "nesterov=False is ignored: without Nesterov the update is the momentum buffer itself.",
        muon_rule(nesterov="always"),
    ),
    Mistake(
        "muon/sgd_momentum_buffer",
        "the momentum buffer is accumulated as SGD's (buf = momentum·buf + grad); torch's "
        "Muon keeps a running average, buf.lerp_(grad, 1 - momentum).",
        muon_rule(buffer="sgd"),
    ),
    Mistake(
        "muon/ns_one_step_short",
        "Newton–Schulz runs one iteration fewer than ns_steps.",
        muon_rule(ns=NS_MISTAKES[1].rule),
    ),
    Mistake(
        "muon/ns_no_normalization",
        "the update is not divided by its Frobenius norm before Newton–Schulz, so the "
        "iteration does not orthogonalize it.",
        muon_rule(ns=NS_MISTAKES[0].rule),
    ),
    Mistake(
        "muon/ns_settings_ignored",
        "the group's ns_steps, ns_coefficients or eps are not passed to Newton–Schulz: "
        "read them from the param group.",
        muon_rule(ns_settings="defaults"),
    ),
    Mistake(
        "muon/adjusted_lr_for_decay",
        "the weight decay uses the adjusted learning rate; torch decays with the group's lr: "
        "p *= 1 - lr * weight_decay.",
        muon_rule(decay="adjusted_lr"),
    ),
    Mistake(
        "muon/decay_after_update",
        "the weight decay is applied after the orthogonalized step; torch shrinks p first, "
        "then adds the step.",
        muon_rule(decay="after"),
    ),
    Mistake(
        "muon/decay_without_lr",
        "the weight decay is not multiplied by the learning rate: p *= 1 - lr * weight_decay.",
        muon_rule(decay="no_lr"),
    ),
    Mistake(
        "muon/no_weight_decay",
        "weight_decay is ignored: p *= 1 - lr * weight_decay comes before the step.",
        muon_rule(decay="none"),
    ),
    Mistake(
        "muon/shape_ratio_inverted",
        "the shape ratio is inverted: the original adjustment is sqrt(max(1, rows / cols)), "
        "so only tall matrices (more rows than columns) get a larger step.",
        muon_rule(adjust="inverted"),
    ),
    Mistake(
        "muon/lr_not_adjusted",
        "the learning rate is not adjusted to the matrix's shape (adjust_lr_fn): torch "
        "scales it by sqrt(max(1, rows / cols)), or 0.2·sqrt(max(rows, cols)) for "
        '"match_rms_adamw".',
        muon_rule(adjust="none"),
    ),
    Mistake(
        "muon/match_rms_ignored",
        'adjust_lr_fn="match_rms_adamw" is treated as the original adjustment; it scales '
        "the learning rate by 0.2·sqrt(max(rows, cols)).",
        muon_rule(adjust="match_ignored"),
    ),
    Mistake(
        "muon/match_rms_min",
        '"match_rms_adamw" uses the larger dimension: 0.2·sqrt(max(rows, cols)).',
        muon_rule(adjust="match_min"),
    ),
)

# Mistakes seen in the state or the constructor's behaviour rather than in the steps.
MUON_DIRECT = {
    "muon/state_key_name": 'the momentum buffer must be stored as state["momentum_buffer"], '
    "torch's name, so that checkpoints are interchangeable with torch.optim.Muon.",
    "muon/buffer_outside_state": "the momentum buffer is kept outside self.state, so "
    "state_dict() does not save it and a resumed run starts from a zero buffer.",
    "muon/frozen_moved": "a parameter whose grad is None must not move and gets no state.",
    "muon/accepts_non_2d": "Muon only supports 2-D parameters: the constructor must raise "
    "ValueError for a parameter with ndim != 2, as torch does.",
    "muon/no_validation": "invalid hyperparameters must raise ValueError naming the parameter "
    "(negative lr, momentum or weight_decay, an unknown adjust_lr_fn).",
}
# A Muon whose steps are torch's algorithm with the student's own (wrong) newton_schulz loses
# the Muon points too (the visible Muon checks use the student's newton_schulz as well); the
# feedback points at newton_schulz (muon/own_newton_schulz).
OWN_NS_SENTENCE = (
    "your Muon follows torch's algorithm, but with your newton_schulz, which differs from "
    "torch's: see the newton_schulz checks."
)


# --- split_params ------------------------------------------------------------------------------


def _module_of(model: nn.Module, name: str) -> nn.Module | None:
    owner = name.rsplit(".", 1)[0] if "." in name else ""
    return dict(model.named_modules()).get(owner)


def _output_weight(model: nn.Module) -> int:
    return id([m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight)


def _by_name(to_muon: Callable[[nn.Module, str, torch.Tensor], bool]) -> Callable:
    """The split that sends to Muon the parameters ``to_muon(model, name, p)`` picks."""

    def split(model: nn.Module) -> tuple[list, list]:
        muon = [p for n, p in model.named_parameters() if to_muon(model, n, p)]
        ids = {id(p) for p in muon}
        return muon, [p for p in model.parameters() if id(p) not in ids]

    return split


def _swapped(model: nn.Module) -> tuple[list, list]:
    muon, adamw = split_reference(model)
    return adamw, muon


def _biases_dropped(model: nn.Module) -> tuple[list, list]:
    muon, adamw = split_reference(model)
    return muon, [p for p in adamw if p.ndim >= 2]


def _is_embedding(model: nn.Module, name: str) -> bool:
    return isinstance(_module_of(model, name), nn.Embedding)


SPLIT_MISTAKES = (
    Mistake(
        "split_params/groups_swapped",
        "the two lists are swapped: the first (Muon's) holds the hidden layers' weight "
        "matrices, the second (AdamW's) everything else.",
        _swapped,
    ),
    Mistake(
        "split_params/all_2d_to_muon",
        "every 2-D parameter goes to Muon, including the embedding and the output layer; "
        "those two belong to AdamW (only hidden layers' matrices go to Muon).",
        _by_name(lambda m, n, p: p.ndim == 2),
    ),
    Mistake(
        "split_params/weights_by_name",
        "every parameter named 'weight' goes to Muon, including 1-D ones (LayerNorm, batch "
        "norm) that Muon cannot take; only hidden nn.Linear weight matrices go to Muon.",
        _by_name(
            lambda m, n, p: (
                n.endswith("weight") and id(p) != _output_weight(m) and not _is_embedding(m, n)
            )
        ),
    ),
    Mistake(
        "split_params/output_layer_to_muon",
        "the output layer's weight goes to Muon; the last linear layer belongs to AdamW.",
        _by_name(lambda m, n, p: isinstance(_module_of(m, n), nn.Linear) and n.endswith("weight")),
    ),
    Mistake(
        "split_params/conv_to_muon",
        "the convolution's 4-D weight goes to Muon, which only takes 2-D parameters.",
        _by_name(
            lambda m, n, p: p.ndim >= 2 and not _is_embedding(m, n) and id(p) != _output_weight(m)
        ),
    ),
    Mistake(
        "split_params/biases_dropped",
        "some parameters are in neither list: every parameter of the model must be in "
        "exactly one of them (biases and norms go to AdamW).",
        _biases_dropped,
    ),
)


# --- factored_second_moment --------------------------------------------------------------------


def factored_rule(slip: str) -> Callable[..., torch.Tensor]:
    """The factored estimate with one slip, named as in its mistake's id."""

    def rule(
        row_var: torch.Tensor,
        col_var: torch.Tensor,
        grad: torch.Tensor,
        one_minus_beta2: float,
        eps1: float,
    ) -> torch.Tensor:
        g2 = grad * grad
        if slip == "rows_cols_swapped":  # only fits square matrices
            row_mean = g2.mean(dim=-2, keepdim=True).mT
            col_mean = g2.mean(dim=-1, keepdim=True).mT
        elif slip == "sums_not_means":
            row_mean, col_mean = g2.sum(dim=-1, keepdim=True), g2.sum(dim=-2, keepdim=True)
        else:
            row_mean, col_mean = g2.mean(dim=-1, keepdim=True), g2.mean(dim=-2, keepdim=True)
        w = 1 - one_minus_beta2 if slip == "weights_swapped" else one_minus_beta2
        if slip == "not_in_place":
            r, c = row_var.lerp(row_mean, w), col_var.lerp(col_mean, w)
        else:
            row_var.lerp_(row_mean, w)
            col_var.lerp_(col_mean, w)
            r, c = row_var, col_var
        if slip == "current_means_only":
            r, c = row_mean, col_mean
        estimate = r @ c
        if slip != "not_normalized":
            m = r.mean(dim=-2, keepdim=True)
            estimate = estimate / (m if slip == "no_eps_clamp" else m.clamp(min=eps1))
        return estimate

    return rule


FACTORED_MISTAKES = (
    Mistake(
        "factored_second_moment/rows_cols_swapped",
        "the row and column averages are swapped: row_var holds, for each row, the mean of "
        "grad² over its columns (dim=-1), and col_var the mean over the rows (dim=-2).",
        factored_rule("rows_cols_swapped"),
    ),
    Mistake(
        "factored_second_moment/not_normalized",
        "the outer product row_var @ col_var counts the overall mean of grad² twice: divide "
        "it by row_var's mean over the rows, clamped at eps1.",
        factored_rule("not_normalized"),
    ),
    Mistake(
        "factored_second_moment/sums_not_means",
        "row_var and col_var hold sums of grad²; torch keeps means (sum divided by the "
        "number of columns, or of rows).",
        factored_rule("sums_not_means"),
    ),
    Mistake(
        "factored_second_moment/weights_swapped",
        "the new mean gets weight 1 - one_minus_beta2 instead of one_minus_beta2: "
        "row_var.lerp_(row_mean, one_minus_beta2).",
        factored_rule("weights_swapped"),
    ),
    Mistake(
        "factored_second_moment/no_eps_clamp",
        "row_var's mean is not clamped at eps1 before dividing: a zero gradient gives 0/0 = nan.",
        factored_rule("no_eps_clamp"),
    ),
    Mistake(
        "factored_second_moment/current_means_only",
        "the estimate is built from this step's means of grad²; it must use the running "
        "averages row_var and col_var.",
        factored_rule("current_means_only"),
    ),
    Mistake(
        "factored_second_moment/not_in_place",
        "row_var and col_var must be updated in place (lerp_ or copy_): assigning a new "
        "tensor to the name does not change the optimizer's state.",
        factored_rule("not_in_place"),
    ),
)


# --- optimizer_state_bytes ---------------------------------------------------------------------


def memory_rule(slip: str) -> Callable[..., int]:
    """A count of state bytes with one slip, named as in its mistake's id."""

    def rule(name: str, shape: Any, dtype: torch.dtype = torch.float32) -> int:
        shape = tuple(shape)
        numel = math.prod(shape)
        size = 4 if slip == "itemsize_ignored" else dtype.itemsize
        if name in ("Adam", "AdamW"):
            return 2 * numel * size + (0 if slip == "adam_no_step" else 4)
        if name == "Adafactor":
            step = 0 if slip == "adafactor_no_step" else 4
            if len(shape) > 1 and slip == "adafactor_flattened":
                return (shape[0] + math.prod(shape[1:])) * size + step
            if len(shape) > 1 and slip != "adafactor_not_factored":
                return (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]) * size + step
            return numel * size + step
        if name == "Muon":
            if len(shape) != 2:
                raise ValueError("Muon only supports 2D parameters")
            buffers = 2 if slip == "muon_two_buffers" else 1
            return buffers * numel * size + (4 if slip == "muon_step_counted" else 0)
        raise ValueError(name)

    return rule


MEMORY_MISTAKES = (
    Mistake(
        "optimizer_state_bytes/adafactor_not_factored",
        "Adafactor does not keep a full second moment for a matrix: only row_var (one "
        "number per row) and col_var (one per column), plus the step.",
        memory_rule("adafactor_not_factored"),
    ),
    Mistake(
        "optimizer_state_bytes/adafactor_no_step",
        "Adafactor also keeps a step count, a 0-d float32 tensor of 4 bytes.",
        memory_rule("adafactor_no_step"),
    ),
    Mistake(
        "optimizer_state_bytes/adafactor_flattened",
        "for tensors with more than two dimensions Adafactor factors the last two: row_var "
        "has shape[:-1] + (1,) and col_var shape[:-2] + (1, shape[-1]).",
        memory_rule("adafactor_flattened"),
    ),
    Mistake(
        "optimizer_state_bytes/muon_step_counted",
        "torch's Muon keeps no step count: its state is the momentum buffer alone.",
        memory_rule("muon_step_counted"),
    ),
    Mistake(
        "optimizer_state_bytes/muon_two_buffers",
        "Muon keeps one buffer (the momentum), not two like Adam.",
        memory_rule("muon_two_buffers"),
    ),
    Mistake(
        "optimizer_state_bytes/itemsize_ignored",
        "the state has the parameter's dtype: use dtype.itemsize bytes per number, not 4.",
        memory_rule("itemsize_ignored"),
    ),
    Mistake(
        "optimizer_state_bytes/adam_no_step",
        "Adam and AdamW also keep a step count, a 0-d float32 tensor of 4 bytes.",
        memory_rule("adam_no_step"),
    ),
)
