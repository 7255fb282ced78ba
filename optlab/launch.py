"""Start N worker processes that run one function with ``torch.distributed``, and collect results.

Real data-parallel jobs start one process per device (``torchrun``); a notebook cannot do that
with its own functions, because a new process cannot import code defined in a notebook. So the
worker code lives in a module file (a ``%%writefile`` cell writes one), and :func:`launch`
starts ``world_size`` fresh processes that each

1. join one process group on a free local port (``gloo`` on CPU; on GPU ``nccl`` when there are
   as many GPUs as ranks, otherwise ``gloo`` with several ranks sharing a GPU),
2. import the module file and call ``function(*args, **kwargs)``,
3. send back what it returned, or the exception with its traceback.

Nothing hangs: ``timeout`` seconds after the ranks started, every rank still running is stopped,
and the error says where each one was waiting (usually in a collective that another rank never
called).

Importing torch costs a second or two of CPU per process. On Linux the ranks are therefore
forked from one fresh helper process that imported torch once (it never touches a GPU before
forking); elsewhere each rank is its own fresh interpreter.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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

_PORT_IN_USE = re.compile(r"address already in use|EADDRINUSE|errno: 98", re.I)
_BOOT = (
    "import sys; sys.path[:0] = [p for p in sys.argv[3].split(sys.argv[4]) if p]; "
    "from optlab import launch; launch._{}_main(sys.argv[1], int(sys.argv[2]))"
)


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
    import importlib.util

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
    seconds after they started.
    """
    plan = plan_devices(world_size, device)
    target_str = os.fspath(target)
    is_file = target_str.endswith(".py") or os.sep in target_str
    search = [str(Path(p).resolve()) for p in paths]
    if is_file:
        file = Path(target_str).resolve()
        if not file.is_file():
            raise FileNotFoundError(f"no module file {file}: run the cell that writes it first")
        target_str = str(file)
        search.insert(0, str(file.parent))
    search.append(str(Path(__file__).resolve().parent.parent))  # optlab itself
    job = {
        "target": target_str,
        "is_file": is_file,
        "function": function,
        "args": tuple(args),
        "kwargs": dict(kwargs or {}),
        "backend": plan.backend,
        "devices": plan.devices,
        "timeout": timeout,
        "threads": threads,
    }
    for attempt in range(3):
        try:
            results, outputs = _run_job(job, search, timeout)
        except LaunchError as exc:
            if attempt < 2 and _PORT_IN_USE.search(str(exc)):
                continue  # another job took the port between our check and rank 0's bind
            raise
        if echo:
            for rank, text in enumerate(outputs):
                for line in text.splitlines():
                    print(f"[rank {rank}] {line}")
        return results
    raise AssertionError("unreachable")


# --- the parent: start the ranks, wait, collect --------------------------------------------


class _Zygote:
    """A helper process that imported torch once and forks the ranks of every job (Linux).

    It lives as long as the process that started it (a notebook kernel, a test session), so
    only the first job pays for importing torch; it never touches a GPU itself.
    """

    _proc: subprocess.Popen | None = None
    _log: Any = None  # an unnamed temporary file: nothing is left behind
    _lock = threading.Lock()

    @classmethod
    def submit(cls, folder: Path, world_size: int) -> subprocess.Popen:
        """Ask the helper to fork ``world_size`` ranks for the job in ``folder``."""
        with cls._lock:
            if cls._proc is None or cls._proc.poll() is not None:
                cls._start()
            assert cls._proc is not None and cls._proc.stdin is not None
            try:
                cls._proc.stdin.write(f"{folder}\t{world_size}\n".encode())
                cls._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                cls._start()
                return cls.submit(folder, world_size)
            return cls._proc

    @classmethod
    def _start(cls) -> None:
        if cls._log is None:
            cls._log = tempfile.TemporaryFile()  # lives as long as this process
            atexit.register(cls._close)
        cls._log.seek(0)
        cls._log.truncate()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        own_path = str(Path(__file__).resolve().parent.parent)
        cls._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT.format("zygote"), "", "0", own_path, os.pathsep],
            env=env,
            stdin=subprocess.PIPE,
            stdout=cls._log,
            stderr=subprocess.STDOUT,
        )

    @classmethod
    def log_tail(cls) -> str:
        """The last lines the helper printed (its error, if it died)."""
        if cls._log is None:
            return ""
        cls._log.seek(0)
        text = cls._log.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-15:])

    @classmethod
    def _close(cls) -> None:
        proc = cls._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(timeout=5)


class _Ranks:
    """The running ranks of one job, forked by the helper or started one by one."""

    def __init__(self, folder: Path, world_size: int, search: list[str], env: dict) -> None:
        self.folder = folder
        self.world_size = world_size
        self.forked = sys.platform.startswith("linux") and not os.environ.get("OPTLAB_LAUNCH_SPAWN")
        self.procs: list[subprocess.Popen] = []
        if self.forked:
            self.zygote = _Zygote.submit(folder, world_size)
            return
        command = [sys.executable, "-c", _BOOT.format("spawned"), str(folder), "", "", os.pathsep]
        command[5] = os.pathsep.join(search)
        for rank in range(world_size):
            command[4] = str(rank)
            with open(folder / f"rank{rank}.out", "w") as out:
                self.procs.append(
                    subprocess.Popen(
                        command,
                        env={**env, **_rank_env(rank, env["OPTLAB_DEVICES"])},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )

    def poll(self) -> list[int | None]:
        """Each rank's exit code, or ``None`` while it runs."""
        if not self.forked:
            return [proc.poll() for proc in self.procs]
        codes: list[int | None] = []
        for rank in range(self.world_size):
            exit_file = self.folder / f"rank{rank}.exit"
            codes.append(int(exit_file.read_text()) if exit_file.exists() else None)
        if self.zygote.poll() is not None:  # the helper died (e.g. torch failed to import)
            codes = [-1 if code is None else code for code in codes]
        return codes

    def pids(self) -> list[int | None]:
        """Each rank's process id, if known."""
        if not self.forked:
            return [proc.pid for proc in self.procs]
        out: list[int | None] = []
        for rank in range(self.world_size):
            pid_file = self.folder / f"rank{rank}.pid"
            out.append(int(pid_file.read_text()) if pid_file.exists() else None)
        return out

    def signal_running(self, sig: int) -> None:
        """Send ``sig`` to every rank that is still running."""
        for pid, code in zip(self.pids(), self.poll(), strict=True):
            if pid is not None and code is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def stop(self) -> None:
        """Kill whatever still runs and wait for it."""
        self.signal_running(signal.SIGKILL)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self.forked:
            # Wait until the helper has reaped every rank, so their exit codes are known.
            deadline = time.monotonic() + 5
            while None in self.poll() and time.monotonic() < deadline:
                time.sleep(0.01)

    def output(self, rank: int) -> str:
        """What the rank printed."""
        path = self.folder / f"rank{rank}.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        if self.forked and self.zygote.poll() is not None:
            text += _Zygote.log_tail()
        return text


def _rank_env(rank: int, devices: str) -> dict[str, str]:
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), DEVICE_ENV: devices.split(",")[rank]}


def _run_job(job: dict[str, Any], search: list[str], timeout: float) -> tuple[list[Any], list[str]]:
    world_size = len(job["devices"])
    with tempfile.TemporaryDirectory(prefix="optlab-launch-") as tmp:
        folder = Path(tmp)
        env = {
            "OMP_NUM_THREADS": str(job["threads"]),
            "MKL_NUM_THREADS": str(job["threads"]),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "",
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size),
            "OPTLAB_DEVICES": ",".join(job["devices"]),
            "PYTHONUNBUFFERED": "1",
        }
        if sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in os.environ:
            env["GLOO_SOCKET_IFNAME"] = "lo"  # stay on loopback, whatever the hostname
        job = {**job, "port": free_port(), "search": search}
        env["MASTER_PORT"] = str(job["port"])
        job["env"] = env
        torch.save(job, folder / "job.pt")
        ranks = _Ranks(folder, world_size, search, {**os.environ, **env})
        try:
            failed, unfinished = _wait(ranks, timeout)
        finally:
            ranks.stop()
        outputs = [ranks.output(rank) for rank in range(world_size)]
        results = [_read_result(folder, rank) for rank in range(world_size)]
        if unfinished:
            raise LaunchTimeout(_timeout_message(job, unfinished, folder, timeout))
        if failed is not None:
            raise _failure(job, failed, results, outputs, ranks.poll())
        return [r["value"] for r in results], outputs


def _wait(ranks: _Ranks, timeout: float) -> tuple[int | None, list[int]]:
    """Wait until all ranks are done, one fails, or time runs out: (failed, unfinished).

    The clock starts once every rank has started (imported torch): the first job of a session
    also waits for the helper process to import it, which takes seconds on a busy machine.
    """
    folder = ranks.folder
    start_by = time.monotonic() + max(STARTUP_LIMIT_S, timeout)
    deadline = None
    while True:
        now = time.monotonic()
        if deadline is None:
            if all((folder / f"rank{r}.ready").exists() for r in range(ranks.world_size)):
                deadline = now + timeout
            elif now > start_by:
                break
        elif now > deadline:
            break
        codes = ranks.poll()
        bad = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
        if bad:
            # Give the other ranks a moment: the first failure is the cause, the rest follow it.
            time.sleep(0.3)
            bad = [rank for rank, code in enumerate(ranks.poll()) if code not in (None, 0)]
            return _first_failure(bad, folder), []
        # A rank is done once its result is written (it may still be closing its group).
        if all(code == 0 or (folder / f"rank{r}.pt").exists() for r, code in enumerate(codes)):
            if all(_read_result(folder, r)["ok"] for r in range(len(codes))):
                return None, []
        time.sleep(0.02)
    unfinished = [rank for rank, code in enumerate(ranks.poll()) if code is None]
    if hasattr(signal, "SIGUSR1"):
        ranks.signal_running(signal.SIGUSR1)  # faulthandler writes where each rank is
        time.sleep(0.5)
    return None, unfinished


def _first_failure(bad: list[int], folder: Path) -> int:
    """The rank whose error was written first (the others usually fail because of it)."""
    stamped = []
    for rank in bad:
        result = folder / f"rank{rank}.pt"
        stamped.append((result.stat().st_mtime if result.exists() else float("inf"), rank))
    return min(stamped)[1]


def _read_result(folder: Path, rank: int) -> dict[str, Any]:
    path = folder / f"rank{rank}.pt"
    if not path.exists():
        return {"ok": False, "error": "", "traceback": ""}
    return torch.load(path, weights_only=False)


def _failure(
    job: dict[str, Any],
    rank: int,
    results: list[dict[str, Any]],
    outputs: list[str],
    codes: list[int | None],
) -> LaunchError:
    result = results[rank]
    if result.get("traceback"):
        detail = result["traceback"].rstrip()
    else:
        tail = "\n".join(outputs[rank].rstrip().splitlines()[-15:])
        why = " (the helper process that forks the ranks died)" if codes[rank] == -1 else ""
        detail = f"the process ended with exit code {codes[rank]}{why} and no Python error.\n{tail}"
    others = [r for r in range(len(results)) if r != rank and results[r].get("error")]
    message = f"rank {rank} of {len(results)} failed running {_target_name(job)}:\n{detail}"
    if others:
        listed = ", ".join(map(str, others))
        message += (
            f"\n(rank{'s' if len(others) > 1 else ''} {listed} then failed too, because of it)"
        )
    return LaunchError(
        message, rank=rank, error=result.get("error", ""), traceback=result.get("traceback", "")
    )


def _timeout_message(
    job: dict[str, Any], unfinished: list[int], folder: Path, timeout: float
) -> str:
    waiting = [r for r in unfinished if not (folder / f"rank{r}.ready").exists()]
    if waiting:
        return (
            f"{_target_name(job)}: ranks {waiting} did not even start within "
            f"{max(STARTUP_LIMIT_S, timeout):g} s (importing torch); the machine is overloaded."
        )
    lines = [
        f"{_target_name(job)} did not finish within {timeout:g} s; ranks {unfinished} were "
        "stopped. A rank that waits forever is usually inside a collective that another rank "
        "never called (for example a broadcast inside `if rank == ...`)."
    ]
    for rank in unfinished:
        where = _stuck_at(folder / f"rank{rank}.stack")
        if where:
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


# --- inside the helper process and the ranks -------------------------------------------------


def _zygote_main(_folder: str, _rank: int) -> None:
    """The helper: import torch once, then fork the ranks of each job it is sent on stdin.

    A job is one line ``FOLDER<TAB>WORLD_SIZE``; the helper writes ``rank{r}.pid`` when it
    forks a rank and ``rank{r}.exit`` (the exit code) when that rank ends. It exits when its
    stdin closes or its parent dies.
    """
    import importlib
    import select

    # Imported once here and shared by every fork: torch.distributed, and torch._dynamo, which
    # the first optimizer step imports (seconds of CPU otherwise, in every rank).
    for name in ("torch.distributed", "torch._dynamo", "torch.distributed.optim"):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    _die_with_parent()
    sys.stdout.flush()
    children: dict[int, tuple[Path, int]] = {}
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.02 if children else 0.5)
        if ready:
            data = os.read(0, 65536)
            if not data:
                break
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                folder_name, world_size = line.decode().split("\t")
                for rank in range(int(world_size)):
                    pid = _fork_rank(Path(folder_name), rank)
                    children[pid] = (Path(folder_name), rank)
                    _write_atomic(Path(folder_name) / f"rank{rank}.pid", str(pid))
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            folder, rank = children.pop(pid, (None, 0))
            if folder is not None:
                code = os.waitstatus_to_exitcode(status)
                _write_atomic(folder / f"rank{rank}.exit", str(code))
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _fork_rank(folder: Path, rank: int) -> int:
    """Fork one rank of the job in ``folder``; in the parent, return its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _die_with_parent()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(folder / f"rank{rank}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = _worker_main(folder, rank)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _spawned_main(folder_name: str, rank: int) -> None:
    """One rank in its own fresh interpreter."""
    sys.exit(_worker_main(Path(folder_name), rank))


def _die_with_parent() -> None:
    """On Linux, end this process when its parent ends (no orphans if the kernel dies)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _worker_main(folder: Path, rank: int) -> int:
    """One rank: join the group, run the function, write the result; the exit code."""
    import datetime
    import faulthandler
    import importlib
    import traceback

    import torch.distributed as dist

    (folder / f"rank{rank}.ready").touch()
    stack = open(folder / f"rank{rank}.stack", "w")  # kept open for faulthandler
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=stack, all_threads=False)
    job = torch.load(folder / "job.pt", weights_only=False)
    os.environ.update(job["env"])
    os.environ.update(_rank_env(rank, job["env"]["OPTLAB_DEVICES"]))
    sys.path[:0] = job["search"]
    torch.set_num_threads(job["threads"])
    result: dict[str, Any]
    try:
        device = torch.device(job["devices"][rank])
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            job["backend"],
            init_method=f"tcp://127.0.0.1:{job['port']}",
            rank=rank,
            world_size=len(job["devices"]),
            timeout=datetime.timedelta(seconds=job["timeout"]),
            **({"device_id": device} if job["backend"] == "nccl" else {}),
        )
        if job["is_file"]:
            module = load_module(job["target"])
        else:
            module = importlib.import_module(job["target"])
        value = getattr(module, job["function"])(*job["args"], **job["kwargs"])
        result = {"ok": True, "value": value}
    except BaseException as exc:  # report everything, even SystemExit, to the parent
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}".strip()[:8000],
            "traceback": _user_traceback(exc, traceback),
        }
    torch.save(result, folder / f"rank{rank}.tmp")
    os.replace(folder / f"rank{rank}.tmp", folder / f"rank{rank}.pt")
    sys.stdout.flush()
    if not result["ok"]:
        # Leave now: a teardown would wait for ranks that are still inside a collective.
        os._exit(1)
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    return 0


def _user_traceback(exc: BaseException, traceback: Any) -> str:
    """The traceback without the launcher's frames and without frames that hide themselves."""
    kept = [
        (frame, lineno)
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        if not frame.f_code.co_filename.endswith(os.path.join("optlab", "launch.py"))
        and "<frozen importlib" not in frame.f_code.co_filename
        and not frame.f_locals.get("__tracebackhide__", False)
    ]
    lines = ["Traceback (most recent call last):\n"]
    lines.extend(traceback.StackSummary.extract(iter(kept)).format())
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)
