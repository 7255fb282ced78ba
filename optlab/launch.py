"""Start N worker processes that run one function with ``torch.distributed``, and collect results.

Real data-parallel jobs start one process per device (``torchrun``; ``optlab.zero_train`` runs
Week 7 that way); a notebook cannot do that with its own functions, because a new process cannot
import code defined in a notebook. So the worker code lives in a module file (a ``%%writefile``
cell writes one), and :func:`launch` starts ``world_size`` processes that each

1. join one process group (``gloo`` on CPU; on GPU ``nccl`` when there are as many GPUs as
   ranks, otherwise ``gloo`` with several ranks sharing a GPU) through the store of rank 0, on a
   port that the system picks and the launcher passes on,
2. import the module file and call ``function(*args, **kwargs)``,
3. send back what it returned, or the exception with its traceback.

The processes come from :mod:`multiprocessing`'s fork server, which imports torch once (it never
touches a GPU) and forks every rank of every job; without one (or with ``OPTLAB_LAUNCH_SPAWN=1``)
each rank is a fresh interpreter. Added here, because multiprocessing does not give it: a timeout
for the whole job (``timeout`` seconds after the ranks started, every rank still running is
stopped, and the error says where each one was waiting, usually in a collective that another
rank never called), the traceback of the rank that failed first, the ranks' output kept away from
the caller's standard error (a notebook shows it, and nbgrader fails the cell), and ranks that end
when the process that launched them ends.
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import importlib
import importlib.util
import io
import multiprocessing
import os
import re
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DevicePlan",
    "LaunchError",
    "LaunchTimeout",
    "free_port",
    "launch",
    "load_module",
    "plan_devices",
    "rank_device",
]

# The environment variable that tells a worker which device its rank uses.
DEVICE_ENV = "OPTLAB_DEVICE"
# How long ranks may take to start (to import torch) before the job's own timeout begins.
STARTUP_LIMIT_S = 180.0
# What the fork server imports once for all ranks: torch.distributed, and torch._dynamo, which
# the first optimizer step imports (seconds of CPU otherwise, in every rank).
PRELOAD = ["torch", "torch.distributed", "torch._dynamo", "torch.distributed.optim", __name__]

_LOG_LOCK = threading.Lock()
_log: Any = None  # where processes started by the launcher write before a rank takes over


class LaunchError(RuntimeError):
    """A rank failed; the message holds its traceback. ``rank`` is the first rank that failed."""

    def __init__(
        self, message: str, rank: int | None = None, error: str = "", traceback: str = ""
    ) -> None:
        super().__init__(message)
        self.rank = rank
        self.error = error  # "ExceptionType: message" of the failing rank, "" if unknown
        self.traceback = traceback  # that rank's traceback, "" if unknown


class LaunchTimeout(LaunchError):
    """Some ranks were still running when the time ran out; they were stopped."""


@dataclass(frozen=True)
class DevicePlan:
    """Which backend the process group uses and which device each rank computes on."""

    backend: str
    devices: tuple[str, ...]

    def describe(self) -> str:
        """One line for a notebook: ranks, backend and devices."""
        shown = sorted(set(self.devices))
        return f"{len(self.devices)} ranks, backend {self.backend}, devices {', '.join(shown)}"


def plan_devices(world_size: int, device: str = "cpu") -> DevicePlan:
    """The backend and per-rank devices for ``device`` = ``"cpu"``, ``"cuda"`` or ``"auto"``.

    On CPU every rank uses gloo. With CUDA, NCCL is used when there are at least as many GPUs as
    ranks (one GPU per rank); with fewer GPUs the ranks share them round-robin over gloo, since
    NCCL refuses two ranks on one GPU.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return DevicePlan("gloo", ("cpu",) * world_size)
    if device != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    n_gpus = torch.cuda.device_count()
    if n_gpus == 0:
        raise RuntimeError("device='cuda' was asked for, but no GPU is visible")
    devices = tuple(f"cuda:{rank % n_gpus}" for rank in range(world_size))
    return DevicePlan("nccl" if n_gpus >= world_size else "gloo", devices)


def rank_device() -> torch.device:
    """Inside a worker: the device this rank should compute on (``cpu`` outside workers)."""
    return torch.device(os.environ.get(DEVICE_ENV, "cpu"))


def load_module(path: str | os.PathLike[str]) -> Any:
    """Import a module file afresh (a plain ``import`` would keep the first version it saw)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no module file {file}: run the cell that writes it first")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(
    target: str | os.PathLike[str],
    function: str,
    world_size: int,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    device: str = "cpu",
    timeout: float = 60.0,
    paths: Iterable[str | os.PathLike[str]] = (),
    threads: int = 1,
    echo: bool = False,
) -> list[Any]:
    """Run ``function`` from ``target`` on ``world_size`` ranks; the value each rank returned.

    ``target`` is a path to a module file (``"zero1.py"``) or an importable module name
    (``"optlab.zero_runs"``); the file's folder and ``paths`` go first on the workers'
    ``sys.path``. Arguments and return values travel with ``torch.save``, so tensors, numbers,
    strings, lists and dicts are fine. With ``echo`` each rank's printed output is shown
    afterwards, prefixed with its rank. Raises :class:`LaunchError` with the traceback of the
    first rank that failed, or :class:`LaunchTimeout` when the ranks still run ``timeout``
    seconds after they started. As with any use of multiprocessing, a script that calls it needs
    an ``if __name__ == "__main__":`` guard (the ranks import the script, not run it).
    """
    plan = plan_devices(world_size, device)
    name = os.fspath(target)
    is_file = name.endswith(".py") or os.sep in name
    search = [str(Path(p).resolve()) for p in paths]
    if is_file:
        file = Path(name).resolve()
        if not file.is_file():
            raise FileNotFoundError(f"no module file {file}: run the cell that writes it first")
        name = str(file)
        search.insert(0, str(file.parent))
    job = {
        "target": name,
        "is_file": is_file,
        "function": function,
        "args": tuple(args),
        "kwargs": dict(kwargs or {}),
        "backend": plan.backend,
        "devices": plan.devices,
        "timeout": timeout,
        "threads": threads,
        "search": search,
    }
    results, outputs = _run_job(job, timeout)
    if echo:
        for rank, text in enumerate(outputs):
            for line in text.splitlines():
                print(f"[rank {rank}] {line}")
    return results


# --- the launcher: start the ranks, wait, collect ------------------------------------------------


def _context() -> BaseContext:
    """multiprocessing's fork server, preloaded with torch; spawn where there is none."""
    if (
        os.environ.get("OPTLAB_LAUNCH_SPAWN")
        or "forkserver" not in multiprocessing.get_all_start_methods()
    ):
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


@contextlib.contextmanager
def _output_to_log() -> Iterator[None]:
    """Point file descriptors 1 and 2 at a log file while processes are started.

    A process started meanwhile (the fork server, a spawned rank) inherits them, so what it
    writes before a rank redirects its own output never reaches the caller's standard error.
    """
    global _log
    with _LOG_LOCK:
        if _log is None:
            _log = tempfile.TemporaryFile()  # unnamed: nothing is left behind
        saved = [os.dup(1), os.dup(2)]
        try:
            for fd in (1, 2):
                os.dup2(_log.fileno(), fd)
            yield
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def _log_size() -> int:
    return os.fstat(_log.fileno()).st_size if _log is not None else 0


def _log_tail(start: int) -> str:
    """What processes wrote to the log, from offset ``start``, while they started."""
    if _log is None:
        return ""
    end = _log_size()
    begin = max(start, end - 4000)
    return os.pread(_log.fileno(), end - begin, begin).decode(errors="replace")


class _Ranks:
    """The processes of one job and what they sent: a ready time, then a result."""

    def __init__(self, world_size: int, folder: Path) -> None:
        self.folder = folder
        self.log_start = _log_size()
        self.ready: list[float | None] = [None] * world_size
        self.results: list[dict[str, Any] | None] = [None] * world_size
        self.ended: list[float | None] = [None] * world_size  # when its channel closed
        self.procs: list[BaseProcess] = []
        self.channels: list[Connection] = []

    def start(self, job: dict[str, Any]) -> None:
        """Start one process per rank, each with a pipe to send back what it has to say."""
        context = _context()
        buffer = io.BytesIO()
        torch.save(job, buffer)  # tensors travel as data, not as shared memory
        sends = []
        for rank in range(len(self.results)):
            receive, send = context.Pipe()
            self.channels.append(receive)
            sends.append(send)
            self.procs.append(
                context.Process(  # type: ignore[attr-defined]
                    target=_rank_main, args=(rank, buffer.getvalue(), send, str(self.folder))
                )
            )
        forked = context.get_start_method() == "forkserver"
        try:
            with _output_to_log():  # the fork server, or each spawned rank, inherits the log
                for proc in [] if forked else self.procs:
                    proc.start()
                if forked:
                    forkserver.ensure_running()
            if forked:  # one request to the fork server per rank, all at once: less waiting
                with ThreadPoolExecutor(len(self.procs)) as pool:
                    list(pool.map(BaseProcess.start, self.procs))
        except Exception as exc:  # the fork server died, or processes ran out
            tail = _log_tail(self.log_start)
            raise LaunchError(f"could not start the ranks: {exc}\n{tail}") from exc
        finally:
            for send in sends:  # each rank holds its copy: the pipe ends when the rank ends
                send.close()

    def receive(self, seconds: float) -> None:
        """Wait up to ``seconds`` for messages, then take in every message that came."""
        wait([c for c in self.channels if not c.closed], max(seconds, 0.0))
        for rank, channel in enumerate(self.channels):
            while not channel.closed and channel.poll():
                try:
                    message = channel.recv()
                except (EOFError, OSError):  # the rank ended
                    channel.close()
                    self.ended[rank] = time.monotonic()
                    break
                if message[0] == "ready":
                    self.ready[rank] = message[1]
                elif message[0] == "port":  # rank 0's store: tell the others where it is
                    for other in self.channels[1:]:
                        with contextlib.suppress(OSError):
                            other.send(message[1])
                else:
                    self.results[rank] = torch.load(io.BytesIO(message[2]), weights_only=False)
                    self.results[rank]["at"] = message[1]

    def failures(self) -> list[tuple[float, int]]:
        """(when, rank) for each rank that raised, or ended without sending a result."""
        out = []
        for rank, (result, ended) in enumerate(zip(self.results, self.ended, strict=True)):
            if result is not None and not result["ok"]:
                out.append((result["at"], rank))
            elif result is None and ended is not None:
                out.append((ended, rank))
        return sorted(out)

    def wait(self, timeout: float) -> list[int]:
        """Wait until every rank is done, one fails, or time runs out; the ranks left running.

        The clock starts once every rank has started: the first job also waits for the fork
        server to import torch, which takes seconds on a busy machine.
        """
        start_by = time.monotonic() + max(STARTUP_LIMIT_S, timeout)
        deadline = None
        while True:
            if deadline is None and None not in self.ready:
                deadline = time.monotonic() + timeout
            if self.failures():
                # Give the other ranks a moment: the first failure is the cause, the rest follow.
                grace = time.monotonic() + 0.3
                while time.monotonic() < grace:
                    self.receive(grace - time.monotonic())
                return []
            if all(r is not None and r["ok"] for r in self.results):
                return []
            left = (deadline or start_by) - time.monotonic()
            if left <= 0:
                break
            self.receive(left)
        running = [rank for rank, r in enumerate(self.results) if r is None]
        for rank in running:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(self.procs[rank].pid, signal.SIGUSR1)  # type: ignore[arg-type]
        stacks = [self.folder / f"rank{rank}.stack" for rank in running]
        until = time.monotonic() + 1.0  # faulthandler writes where each rank is
        while time.monotonic() < until and not all(p.exists() and p.stat().st_size for p in stacks):
            time.sleep(0.02)
        return running

    def stop(self) -> None:
        """Kill whatever still runs and wait for it (a few seconds at most)."""
        for proc in self.procs:
            if proc.pid is not None and proc.exitcode is None:
                proc.kill()
        until = time.monotonic() + 10
        for proc, channel in zip(self.procs, self.channels, strict=True):
            if proc.pid is not None:
                proc.join(max(until - time.monotonic(), 0))
            channel.close()

    def output(self, rank: int) -> str:
        """What the rank printed."""
        path = self.folder / f"rank{rank}.out"
        return path.read_text(errors="replace") if path.exists() else ""


def _run_job(job: dict[str, Any], timeout: float) -> tuple[list[Any], list[str]]:
    with tempfile.TemporaryDirectory(prefix="optlab-launch-") as tmp:
        ranks = _Ranks(len(job["devices"]), Path(tmp))
        try:
            ranks.start(job)
            running = ranks.wait(timeout)
        finally:
            ranks.stop()
        outputs = [ranks.output(rank) for rank in range(len(ranks.procs))]
        if ranks.failures():
            raise _failure(job, ranks, outputs)
        if running:
            raise LaunchTimeout(_timeout_message(job, ranks, running, timeout))
        return [r["value"] for r in ranks.results], outputs  # type: ignore[index]


def _failure(job: dict[str, Any], ranks: _Ranks, outputs: list[str]) -> LaunchError:
    """The error of the rank that failed first (the others usually fail because of it)."""
    failed = [rank for _, rank in ranks.failures()]
    rank = failed[0]
    result = ranks.results[rank] or {}
    if result.get("traceback"):
        detail = result["traceback"].rstrip()
    else:
        # Nothing printed: the rank died while starting, and multiprocessing wrote why in the log.
        tail = "\n".join((outputs[rank].strip() or _log_tail(ranks.log_start)).splitlines()[-15:])
        code = ranks.procs[rank].exitcode
        detail = f"the process ended with exit code {code} and no Python error.\n{tail}".strip()
    message = f"rank {rank} of {len(ranks.procs)} failed running {_target_name(job)}:\n{detail}"
    if others := failed[1:]:
        listed = ", ".join(map(str, sorted(others)))
        message += (
            f"\n(rank{'s' if len(others) > 1 else ''} {listed} then failed too, because of it)"
        )
    return LaunchError(
        message, rank=rank, error=result.get("error", ""), traceback=result.get("traceback", "")
    )


def _timeout_message(job: dict[str, Any], ranks: _Ranks, running: list[int], timeout: float) -> str:
    if waiting := [rank for rank in running if ranks.ready[rank] is None]:
        return (
            f"{_target_name(job)}: ranks {waiting} did not even start within "
            f"{max(STARTUP_LIMIT_S, timeout):g} s (importing torch); the machine is overloaded."
        )
    lines = [
        f"{_target_name(job)} did not finish within {timeout:g} s; ranks {running} were "
        "stopped. A rank that waits forever is usually inside a collective that another rank "
        "never called (for example a broadcast inside `if rank == ...`)."
    ]
    for rank in running:
        if where := _stuck_at(ranks.folder / f"rank{rank}.stack"):
            lines.append(f"rank {rank} was waiting at {where}")
    return "\n".join(lines)


def _stuck_at(stack_file: Path) -> str:
    """The innermost frame of a faulthandler dump that is not in the library or torch."""
    if not stack_file.exists():
        return ""
    library = {sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib")}
    library.add(str(Path(torch.__file__).parent))
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', stack_file.read_text())
    for file, line, func in frames:  # faulthandler lists the innermost frame first
        if not any(file.startswith(prefix) for prefix in library) and not file.startswith("<"):
            return f"{Path(file).name}, line {line}, in {func}"
    return ""


def _target_name(job: dict[str, Any]) -> str:
    where = Path(job["target"]).name if job["is_file"] else job["target"]
    return f"{where}:{job['function']}"


# --- inside a rank ------------------------------------------------------------------------------


def _rank_main(rank: int, job_bytes: bytes, channel: Connection, folder: str) -> None:
    """One rank: run the job's function and send back its result or its error."""
    out = os.open(Path(folder, f"rank{rank}.out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for fd in (1, 2):
        os.dup2(out, fd)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parent = multiprocessing.parent_process()
    assert parent is not None
    threading.Thread(target=_exit_after, args=(parent,), daemon=True).start()
    if hasattr(signal, "SIGUSR1"):
        stack = open(Path(folder, f"rank{rank}.stack"), "w")  # kept open for faulthandler
        faulthandler.register(signal.SIGUSR1, file=stack, all_threads=False)
    channel.send(("ready", time.monotonic()))
    job = torch.load(io.BytesIO(job_bytes), weights_only=False)
    failed = False
    try:
        message = _packed({"ok": True, "value": _call(job, rank, channel)})
    except BaseException as exc:  # report everything, even SystemExit, to the launcher
        failed = True
        error = f"{type(exc).__name__}: {exc}".strip()[:8000]
        message = _packed({"ok": False, "error": error, "traceback": _user_traceback(exc)})
    sys.stdout.flush()
    sys.stderr.flush()
    channel.send(("result", time.monotonic(), message))
    if failed:
        os._exit(1)  # now: a teardown would wait for ranks that are still inside a collective
    # Stay until the launcher, once it holds every result, stops the ranks: a rank that closed its
    # process group now could break the connections of a rank still setting up its own.
    parent.join()


def _exit_after(parent: BaseProcess) -> None:
    """End this rank when the process that launched it ends (a notebook kernel that died)."""
    parent.join()
    os._exit(1)


def _call(job: dict[str, Any], rank: int, channel: Connection) -> Any:
    """Join the process group, import the target and call the function: its value."""
    world_size = len(job["devices"])
    timeout = datetime.timedelta(seconds=job["timeout"])
    # Rank 0 serves the store on a port the system picks, so no other job can have it; the
    # launcher passes the port on to the other ranks.
    if rank == 0:
        store = dist.TCPStore("127.0.0.1", 0, world_size, True, timeout, wait_for_workers=False)
        channel.send(("port", store.port))
    else:
        store = dist.TCPStore("127.0.0.1", channel.recv(), world_size, False, timeout)
    os.environ.update(
        OMP_NUM_THREADS=str(job["threads"]),
        MKL_NUM_THREADS=str(job["threads"]),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(store.port),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        OPTLAB_DEVICES=",".join(job["devices"]),
        **{DEVICE_ENV: job["devices"][rank]},
    )
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on loopback, whatever the host
    sys.path[:0] = job["search"]
    torch.set_num_threads(job["threads"])
    device = torch.device(job["devices"][rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        job["backend"],
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=timeout,
        **({"device_id": device} if job["backend"] == "nccl" else {}),
    )
    if job["is_file"]:
        module = load_module(job["target"])
    else:
        module = importlib.import_module(job["target"])
    return getattr(module, job["function"])(*job["args"], **job["kwargs"])


def _packed(result: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(result, buffer)
    return buffer.getvalue()


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the launcher's frames and without frames that hide themselves."""
    kept = [
        (frame, lineno)
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename != __file__
        and "<frozen importlib" not in frame.f_code.co_filename
        and not frame.f_locals.get("__tracebackhide__", False)
    ]
    lines = ["Traceback (most recent call last):\n"]
    lines.extend(traceback.StackSummary.extract(iter(kept)).format())
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)
