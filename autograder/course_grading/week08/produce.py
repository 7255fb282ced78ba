"""Student side: Week 8's producers (the shared ones are in ``core.produce``).

A check's inputs are plain data: shapes, seeds, hyperparameters, model descriptions. The
matrices, gradients and models are rebuilt here from them, and the trusted side rebuilds the
same ones with these functions. Every producer returns what the student's code did, as plain
data; nothing here knows the references, the tolerances or the typical mistakes.

``forbid`` (dotted names: torch's Muon and Adafactor, their functions) is blocked while the
student's code runs (:func:`course_grading.core.harness.student_code`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from course_grading.core.harness import attempt, plain, student_code
from course_grading.core.produce import calls as core_calls
from course_grading.core.produce import lineage, signature

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` for ``torch.float32``."""
    return str(dtype).removeprefix("torch.")


# --- the first of the objects a test cell hands in ---------------------------------------------


def first_lineage(answer: Any, *_others: Any) -> dict[str, Any]:
    """:func:`core.produce.lineage` of the first object handed in (the Muon cells hand in two)."""
    return lineage(answer)


def first_signature(answer: Any, *_others: Any) -> dict[str, Any]:
    """:func:`core.produce.signature` of the first object handed in."""
    return signature(answer)


# --- matrices ----------------------------------------------------------------------------------


def make_matrix(shape: Sequence[int], kind: str, seed: int, scale: float = 1.0) -> torch.Tensor:
    """A float32 matrix drawn from ``seed``: ``"gaussian"`` (i.i.d. normal), ``"conditioned"``
    (``U diag(s) Vᵀ`` with singular values s in [0.3, 1]) or ``"zero"``."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    if kind == "gaussian":
        matrix = torch.randn(m, n, generator=gen, dtype=torch.float64)
    elif kind == "conditioned":
        k = min(m, n)
        u, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
        s = 0.3 + 0.7 * torch.rand(k, generator=gen, dtype=torch.float64)
        matrix = (u * s) @ v.T
    elif kind == "zero":
        matrix = torch.zeros(m, n, dtype=torch.float64)
    else:
        raise ValueError(f"unknown kind of matrix {kind!r}")
    return (scale * matrix).float()


# --- newton_schulz -----------------------------------------------------------------------------


def ns_matrix(case: dict[str, Any]) -> torch.Tensor:
    """The input matrix of a Newton–Schulz case."""
    return make_matrix(case["shape"], case["kind"], case["seed"], case["scale"])


def ns_outputs(
    newton_schulz: Any, cases: Sequence[dict[str, Any]], forbid: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """``newton_schulz(G, steps, coefficients, eps)`` for each case: its result, or its error."""
    with student_code(forbid):
        return [_ns_output(newton_schulz, case) for case in cases]


def _ns_output(newton_schulz: Any, case: dict[str, Any]) -> dict[str, Any]:
    G = ns_matrix(case)

    def call() -> Any:
        with torch.no_grad():
            coefficients = tuple(case["coefficients"])
            return plain(newton_schulz(G, case["steps"], coefficients, case["eps"]))

    value, error = attempt(call)
    return {"error": error} if error else {"value": value}


# --- Muon --------------------------------------------------------------------------------------


def muon_initial(case: dict[str, Any]) -> list[torch.Tensor]:
    """The parameters a Muon case starts from (float32, one per shape)."""
    gen = torch.Generator().manual_seed(1000 + case["seed"])
    return [case["param_scale"] * torch.randn(*shape, generator=gen) for shape in case["shapes"]]


def muon_gradient(case: dict[str, Any], step: int, i: int) -> torch.Tensor | None:
    """The gradient of parameter ``i`` at ``step`` (0-based); ``None`` for a frozen one."""
    if i in case["frozen"]:
        return None
    if case["zero_first"] and step == 0:
        return torch.zeros(tuple(case["shapes"][i]))
    seed = 100_000 * case["seed"] + 100 * step + i
    return make_matrix(case["shapes"][i], case["kind"], seed, case["grad_scale"])


def _build_muon(Muon: Any, params: list[torch.Tensor], case: dict[str, Any]) -> Any:
    if case["groups"] is None:
        return Muon(params, **case["hyper"])
    groups = []
    for spec in case["groups"]:
        group = {k: v for k, v in spec.items() if k != "params"}
        group["params"] = [params[i] for i in spec["params"]]
        groups.append(group)
    return Muon(groups, **case["hyper"])


def _resume(Muon: Any, optimizer: Any, params: list[torch.Tensor], case: dict[str, Any]) -> Any:
    """``state_dict()`` through ``torch.save``/``torch.load`` into a new Muon over copies."""
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    fresh = [p.detach().clone().requires_grad_() for p in params]
    resumed = _build_muon(Muon, fresh, case)
    resumed.load_state_dict(torch.load(buffer))
    return resumed, fresh


def _step(optimizer: Any, params: list[torch.Tensor], case: dict[str, Any], t: int) -> None:
    for i, p in enumerate(params):
        p.grad = muon_gradient(case, t, i)
    optimizer.step()


def _state_of(optimizer: Any, p: torch.Tensor) -> dict[str, Any]:
    state = optimizer.state.get(p, {})
    return {str(key): plain(value) for key, value in dict(state).items()}


def muon_steps(
    Muon: Any, newton_schulz: Any, case: dict[str, Any], forbid: Sequence[str] = ()
) -> dict[str, Any]:
    """The student's Muon on a case: the parameters after every step, the state after the last.

    Also ``newton_schulz`` of the direction torch's Muon orthogonalizes at every step
    (:func:`own_newton_schulz`), so that a Muon that is right but for its ``newton_schulz``
    can be told apart from a wrong Muon.
    """
    with student_code(forbid):
        record = _muon_run(Muon, case)
        record["own_ns"] = own_newton_schulz(newton_schulz, case)
    return record


def _muon_run(Muon: Any, case: dict[str, Any]) -> dict[str, Any]:
    params = [p.requires_grad_() for p in muon_initial(case)]
    record: dict[str, Any] = {"params": [[p.detach().clone() for p in params]], "error": None}
    optimizer, error = attempt(lambda: _build_muon(Muon, params, case))
    stage, step = "construct", 0
    for t in range(case["steps"]):
        if error is not None:
            break
        step = t + 1
        if t == case["resume_at"]:
            resumed, error = attempt(
                lambda optimizer=optimizer, params=params: _resume(Muon, optimizer, params, case)
            )
            if error is not None:
                stage = "resume"
                break
            optimizer, params = resumed
        _, error = attempt(
            lambda t=t, optimizer=optimizer, params=params: _step(optimizer, params, case, t)
        )
        stage = "step"
        if error is None:
            record["params"].append([p.detach().clone() for p in params])
    if error is not None:
        record["error"] = {**error, "stage": stage, "step": step}
        record["state"] = None
    else:
        record["state"], record["state_error"] = attempt(
            lambda: [_state_of(optimizer, p) for p in params]
        )
    return record


def own_newton_schulz(newton_schulz: Any, case: dict[str, Any]) -> list[list[Any]]:
    """For every step and parameter, ``newton_schulz`` of the direction torch's Muon takes.

    The direction follows from the gradients alone: the momentum buffer is their running
    average, ``buf.lerp_(grad, 1 - momentum)``, and the direction is ``grad.lerp(buf,
    momentum)`` with Nesterov, the buffer without. ``case["directions"]`` holds each
    parameter's momentum, nesterov and Newton–Schulz settings. ``None`` where the parameter
    has no gradient or ``newton_schulz`` raised.
    """
    buffers: list[torch.Tensor | None] = [None] * len(case["shapes"])
    found = []
    for t in range(case["steps"]):
        row: list[Any] = []
        for i, setting in enumerate(case["directions"]):
            grad = muon_gradient(case, t, i)
            if grad is None:
                row.append(None)
                continue
            momentum = setting["momentum"]
            buffer = buffers[i] if buffers[i] is not None else torch.zeros_like(grad)
            buffers[i] = buffer.lerp_(grad, 1 - momentum)
            direction = grad.lerp(buffer, momentum) if setting["nesterov"] else buffer.clone()

            def call(direction: torch.Tensor = direction, setting: dict = setting) -> Any:
                with torch.no_grad():
                    coefficients = tuple(setting["ns_coefficients"])
                    steps, eps = setting["ns_steps"], setting["eps"]
                    return plain(newton_schulz(direction, steps, coefficients, eps))

            value, error = attempt(call)
            row.append(None if error else value)
        found.append(row)
    return found


def muon_param_outcomes(
    Muon: Any, calls: Sequence[dict[str, Any]], forbid: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """For each call, whether ``Muon(params)`` raised, and how.

    ``call["groups"]`` lists the parameter shapes of each group; with ``call["as_groups"]``
    the parameters are given as param-group dicts, otherwise as the first group's list.
    """
    outcomes = []
    for call in calls:

        def construct(call: dict[str, Any] = call) -> Any:
            groups = [
                [torch.zeros(*shape, requires_grad=True) for shape in group]
                for group in call["groups"]
            ]
            params = [{"params": g} for g in groups] if call["as_groups"] else groups[0]
            return Muon(params)

        _, error = attempt(construct, forbid)
        outcomes.append({"error": error})
    return outcomes


# --- split_params ------------------------------------------------------------------------------


class TinyTransformer(nn.Module):
    """Embedding, a block (LayerNorm, attention-like projections, MLP), a final norm, a head."""

    def __init__(self, vocab: int = 50, width: int = 16, bias: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.norm2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width, bias=bias)
        self.fc_out = nn.Linear(4 * width, width, bias=bias)
        self.norm_final = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj(torch.softmax(q @ k.mT, dim=-1) @ v)
        x = x + self.fc_out(torch.relu(self.fc(self.norm2(x))))
        return self.head(self.norm_final(x))


class SmallConvNet(nn.Module):
    """A conv layer (4-D weight), batch norm, a hidden linear layer, the output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.hidden = nn.Linear(4 * 6 * 6, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.out(torch.relu(self.hidden(x)))


def _layer(kind: str, *sizes: Any) -> nn.Module:
    if kind == "linear":
        n_in, n_out, bias = sizes
        return nn.Linear(n_in, n_out, bias=bias)
    if kind == "layernorm":
        return nn.LayerNorm(*sizes)
    if kind == "embedding":
        return nn.Embedding(*sizes)
    return {"tanh": nn.Tanh, "relu": nn.ReLU}[kind]()


def build_model(spec: dict[str, Any]) -> nn.Module:
    """A model described as data: ``{"kind": "mlp", "sizes": [...]}``, ``{"kind": "layers",
    "layers": [["linear", 8, 16, False], ["tanh"], ...]}``, ``{"kind": "transformer", "bias":
    ...}`` or ``{"kind": "convnet"}`` (initialised without touching the caller's RNG)."""
    from optlab.models import mlp

    with torch.random.fork_rng():
        torch.manual_seed(0)
        kind = spec["kind"]
        if kind == "mlp":
            return mlp(tuple(spec["sizes"]))
        if kind == "layers":
            return nn.Sequential(*(_layer(*layer) for layer in spec["layers"]))
        if kind == "transformer":
            return TinyTransformer(bias=spec["bias"])
        if kind == "convnet":
            return SmallConvNet()
    raise ValueError(f"unknown model {kind!r}")


def split_names(split_params: Any, models: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each model, the names of the parameters in each of the two returned lists."""
    outcomes = []
    for spec in models:
        model = build_model(spec)
        naming = {id(p): name for name, p in model.named_parameters()}

        def call(model: nn.Module = model, naming: dict[int, str] = naming) -> dict[str, Any]:
            muon, adamw = split_params(model)
            return {
                "muon": [naming.get(id(p), "?") for p in muon],
                "adamw": [naming.get(id(p), "?") for p in adamw],
            }

        value, error = attempt(call)
        outcomes.append({"error": error} if error else value)
    return outcomes


# --- factored_second_moment and the Adafactor class --------------------------------------------


def factored_gradient(case: dict[str, Any], t: int) -> torch.Tensor:
    """The gradient at step ``t`` of a factored case: rows with different scales."""
    dtype = DTYPES[case["dtype"]]
    shape = tuple(case["shape"])
    if case["zero_first"] and t == 0:
        return torch.zeros(shape, dtype=dtype)
    gen = torch.Generator().manual_seed(7919 * case["seed"] + t)
    scales = torch.rand(shape[-2], 1, generator=gen, dtype=torch.float64) * 3 + 0.1
    return (scales * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)


def factored_zeros(case: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``row_var`` and ``col_var`` at the start: zeros of shapes (..., m, 1) and (..., 1, n)."""
    dtype = DTYPES[case["dtype"]]
    shape = tuple(case["shape"])
    return (
        torch.zeros(*shape[:-1], 1, dtype=dtype),
        torch.zeros(*shape[:-2], 1, shape[-1], dtype=dtype),
    )


def factored_runs(
    function: Any, cases: Sequence[dict[str, Any]], forbid: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """For each case, ``(row_var, col_var, estimate)`` after every call of ``function`` (the
    student's ``factored_second_moment``, or a reference), with weight ``t ** beta2_decay``."""
    outcomes = []
    for case in cases:
        row_var, col_var = factored_zeros(case)
        steps: list[list[Any]] = []

        def run(case: dict[str, Any] = case, row_var=row_var, col_var=col_var, steps=steps) -> None:
            for t in range(case["steps"]):
                weight = (t + 1) ** case["beta2_decay"]
                grad = factored_gradient(case, t)
                estimate = function(row_var, col_var, grad, weight, case["eps1"])
                steps.append([row_var.detach().clone(), col_var.detach().clone(), plain(estimate)])

        _, error = attempt(run, forbid)
        outcomes.append({"error": error} if error else {"steps": steps})
    return outcomes


def adafactor_initial(case: dict[str, Any]) -> list[torch.Tensor]:
    """The parameters an Adafactor case starts from."""
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = DTYPES[case["dtype"]]
    return [
        torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(dtype)
        for shape in case["shapes"]
    ]


def adafactor_gradient(case: dict[str, Any], t: int, i: int) -> torch.Tensor:
    """The gradient of parameter ``i`` at step ``t`` of an Adafactor case."""
    dtype = DTYPES[case["dtype"]]
    shape = tuple(case["shapes"][i])
    if case["zero_first"] and t == 0:
        return torch.zeros(shape, dtype=dtype)
    gen = torch.Generator().manual_seed(10_000 * case["seed"] + 100 * t + i)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def adafactor_run(
    Adafactor: Any, case: dict[str, Any], forbid: Sequence[str] = ()
) -> dict[str, Any]:
    """The parameters and the state after every step of ``Adafactor`` (the notebook's class,
    or torch's on the trusted side) on a case; stops at the first error."""
    params = [p.requires_grad_() for p in adafactor_initial(case)]
    run: dict[str, Any] = {"params": [], "state": [], "error": None}
    optimizer, error = attempt(lambda: Adafactor(params, **case["hyper"]), forbid)
    for t in range(case["steps"]):
        if error is not None:
            break

        def step(t: int = t, optimizer: Any = optimizer) -> None:
            for i, p in enumerate(params):
                p.grad = adafactor_gradient(case, t, i)
            optimizer.step()
            run["params"].append([p.detach().clone() for p in params])
            run["state"].append([_state_of(optimizer, p) for p in params])

        _, error = attempt(step, forbid)
    run["error"] = error
    return run


def adafactor_runs(
    Adafactor: Any,
    _factored_second_moment: Any,
    cases: Sequence[dict[str, Any]],
    forbid: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """:func:`adafactor_run` for every case (the class calls the student's function)."""
    return [adafactor_run(Adafactor, case, forbid) for case in cases]


# --- optimizer_state_bytes ---------------------------------------------------------------------


def state_byte_calls(
    function: Any, calls: Sequence[dict[str, Any]], forbid: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """:func:`core.produce.calls`, with the ``forbid`` functions blocked."""
    with student_code(forbid):
        return core_calls(function, calls)


def _stepped_state(name: str, optimizer_cls: Any, dtype: torch.dtype, spec: dict) -> list:
    """The state records (``optlab.memory``) of ``optimizer_cls`` after one step on an mlp."""
    from optlab.memory import measure_state
    from optlab.models import mlp

    net = mlp(tuple(spec["sizes"]), seed=0, dtype=dtype)
    if name == "Muon":
        groups = []
        for spec_group in spec["muon_groups"]:
            group = {k: v for k, v in spec_group.items() if k != "layers"}
            group["params"] = [net[i].weight for i in spec_group["layers"]]
            groups.append(group)
        optimizer = optimizer_cls(groups)
    else:
        optimizer = optimizer_cls(net.parameters())
    X = torch.randn(8, spec["sizes"][0], generator=torch.Generator().manual_seed(0)).to(dtype)
    net(X).square().mean().backward()
    # A step that stops inside a wrong factored_second_moment is charged by that exercise's
    # checks; the state made before it is still measured.
    attempt(optimizer.step)
    return measure_state(optimizer, net)


def memory_own(
    optimizer_state_bytes: Any,
    Muon: Any,
    Adafactor: Any,
    spec: dict[str, Any],
    forbid: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """For the student's Muon and the notebook's Adafactor after one step on an mlp, in each
    dtype: every parameter's state bytes, and what ``optimizer_state_bytes`` counts for it."""
    with student_code(forbid):
        return _memory_rows(optimizer_state_bytes, Muon, Adafactor, spec)


def _memory_rows(
    optimizer_state_bytes: Any, Muon: Any, Adafactor: Any, spec: dict[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name_of_dtype in spec["dtypes"]:
        dtype = DTYPES[name_of_dtype]
        for name, cls in (("Muon", Muon), ("Adafactor", Adafactor)):
            records, error = attempt(
                lambda name=name, cls=cls, dtype=dtype: _stepped_state(name, cls, dtype, spec)
            )
            if error is not None:
                rows.append({"optimizer": name, "dtype": name_of_dtype, "error": error})
                continue
            for record in records:
                if not record.entries:  # no state (the step stopped before it was made)
                    continue
                counted, counting_error = attempt(
                    lambda name=name, record=record: plain(
                        optimizer_state_bytes(name, record.shape, record.dtype)
                    )
                )
                rows.append(
                    {
                        "optimizer": name,
                        "param": record.name,
                        "shape": tuple(record.shape),
                        "dtype": dtype_name(record.dtype),
                        "held": int(record.total),
                        "counted": {"error": counting_error}
                        if counting_error
                        else {"value": counted},
                    }
                )
    return rows
