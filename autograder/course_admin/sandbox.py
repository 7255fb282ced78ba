"""Run a submission's code in a bubblewrap sandbox: what it sees, what it may do, how long.

Grading runs each student's notebook in its own sandbox built with bubblewrap (``bwrap``, the
tool Flatpak uses). Inside it:

- the file system holds, read-only, only what running the notebook needs: the system's
  programs and libraries, the Python environment and the grading kit (a copy of the course's
  helper package, the student side of the grading code and the week's inputs). The course
  repository, ``source/``, ``solutions/``, the gradebook, other students' work and the
  instructor's home are not there at all. The only writable places are a private ``/tmp``
  and ``/dev/shm``, both in memory with a size limit;
- there is no network: the sandbox has its own, with only a loopback interface;
- it has its own process tree: when the grading ends, every process in it ends too. A
  watchdog stops it when it starts more processes than allowed, and the address space of each
  process is limited;
- the environment holds only what the run needs (no instructor's variables, no passwords).

What comes back is read from the sandbox's standard output, up to a size limit, and is
treated as untrusted data by whoever reads it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Wall-clock limit for one student's whole notebook; every cell also has nbgrader's timeout.
STUDENT_TIMEOUT_S = int(os.environ.get("COURSE_STUDENT_TIMEOUT_S", "1200"))
# Address-space limit of every process in the sandbox.
MEMORY_LIMIT_GB = float(os.environ.get("COURSE_MEMORY_LIMIT_GB", "4"))
# Size of the sandbox's writable, in-memory /tmp (and of /dev/shm).
DISK_LIMIT_MB = int(os.environ.get("COURSE_DISK_LIMIT_MB", "1024"))
# Processes the sandbox may run at once (the kernel, Week 7's ranks, their helpers).
MAX_PROCESSES = int(os.environ.get("COURSE_MAX_PROCESSES", "64"))
# The most a sandbox may send back (the executed notebook and the checks' outputs).
MAX_OUTPUT_MB = 256

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf "
    "install bubblewrap; Arch: sudo pacman -S bubblewrap)"
)
# Read-only system folders every program needs; symbolic links (merged /usr) stay links.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/alternatives",
    "/etc/fonts",
)


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    timeout_s: float = STUDENT_TIMEOUT_S
    memory_gb: float = MEMORY_LIMIT_GB
    disk_mb: int = DISK_LIMIT_MB
    processes: int = MAX_PROCESSES
    output_mb: int = MAX_OUTPUT_MB


@dataclass
class Outcome:
    """How a sandboxed run ended: its exit code, what it printed, which limit stopped it."""

    returncode: int | None
    stdout: bytes
    stderr: str
    stopped: str | None = None  # why the watchdog stopped it, in words, if it did
    wall_s: float = 0.0
    sandboxed: bool = True


@dataclass
class Mounts:
    """What the sandbox sees besides the system: (outside path, inside path) pairs."""

    readonly: list[tuple[Path, Path]] = field(default_factory=list)
    covered: list[Path] = field(default_factory=list)  # files replaced by an empty file
    empty_file: Path | None = None


def unavailable() -> str | None:
    """Why no sandbox can be made here (``None`` when bubblewrap works)."""
    if not sys.platform.startswith("linux"):
        return f"sandboxed grading needs Linux with bubblewrap; this is {sys.platform}"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}"
    probe = subprocess.run(
        [bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return (
            "bubblewrap cannot create a sandbox on this machine (are user namespaces "
            f"disabled?): {probe.stderr.strip()[:300]}"
        )
    return None


def python_paths() -> list[tuple[Path, Path]]:
    """The folders the course's Python needs, as (outside, inside) pairs: the interpreter's
    install and the environment, each where it really is and, when the path the grader runs
    from goes through a symbolic link (a ``.venv`` linked to an environment elsewhere), also
    at that path, which the sandbox runs the interpreter by."""
    pairs = set()
    for prefix in (sys.base_prefix, sys.prefix):
        real, named = Path(prefix).resolve(), Path(os.path.abspath(prefix))
        pairs.add((real, real))
        # Under a system folder the link itself is mounted, and leads to the real folder.
        if named != real and not any(named.is_relative_to(p) for p in SYSTEM_PATHS):
            pairs.add((real, named))
    return sorted(pairs)


def bwrap_command(
    command: list[str], mounts: Mounts, env: dict[str, str], limits: Limits
) -> list[str]:
    """The bubblewrap command line that runs ``command`` as described in this module."""
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    for path in SYSTEM_PATHS:
        p = Path(path)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), path]
        elif p.exists():
            args += ["--ro-bind", path, path]
    for path in ETC_FILES:
        if Path(path).exists():
            args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    size = str(limits.disk_mb * 2**20)
    args += ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm"]
    # After the private /tmp, so that a course checked out under /tmp still finds its Python.
    for outside, inside in python_paths():
        args += ["--ro-bind", str(outside), str(inside)]
    for outside, inside in mounts.readonly:
        args += ["--ro-bind", str(outside), str(inside)]
    if mounts.covered:
        assert mounts.empty_file is not None
        for path in mounts.covered:
            args += ["--ro-bind", str(mounts.empty_file), str(path)]
    # Everything but /tmp and /dev/shm read-only (the root and /dev are in-memory file systems
    # bubblewrap made, which would otherwise take writes without a size limit).
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    args += ["--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", "/tmp", "--"]
    return args + command


def run(
    command: list[str],
    mounts: Mounts,
    env: dict[str, str],
    limits: Limits = Limits(),
    sandbox: bool = True,
) -> Outcome:
    """Run ``command`` in a sandbox (or, with ``sandbox=False``, only with the limits)."""
    full = bwrap_command(command, mounts, env, limits) if sandbox else command
    read_info, write_info = os.pipe()
    if sandbox:
        full = [full[0], "--info-fd", str(write_info), *full[1:]]

    def limit_memory() -> None:
        limit = int(limits.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    start = time.perf_counter()
    proc = subprocess.Popen(
        full,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if not sandbox else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=env.get("TMPDIR") if not sandbox else None,
        preexec_fn=limit_memory,
        pass_fds=(write_info,) if sandbox else (),
        start_new_session=True,
    )
    os.close(write_info)
    stopped: list[str] = []
    chunks: list[bytes] = []
    errors: list[bytes] = []
    readers = [
        threading.Thread(target=_read, args=(proc.stdout, chunks, limits.output_mb, proc, stopped)),
        threading.Thread(target=_read, args=(proc.stderr, errors, 4, None, [])),
    ]
    for reader in readers:
        reader.start()
    inner = _child_pid(read_info) if sandbox else None
    if not sandbox:
        os.close(read_info)
    watchdog = threading.Thread(target=_watch, args=(proc, inner, limits, stopped), daemon=True)
    watchdog.start()
    try:
        proc.wait(timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        stopped.append(f"took over {limits.timeout_s:g} s")
        _kill(proc)
        proc.wait()
    if not sandbox:
        _kill(proc)  # whatever the notebook left running in its process group
    for reader in readers:
        reader.join()
    return Outcome(
        returncode=proc.returncode,
        stdout=b"".join(chunks),
        stderr=b"".join(errors).decode(errors="replace")[-4000:],
        stopped=stopped[0] if stopped else None,
        wall_s=time.perf_counter() - start,
        sandboxed=sandbox,
    )


def _read(stream, chunks: list[bytes], limit_mb: int, proc, stopped: list[str]) -> None:
    total = 0
    while block := stream.read(1 << 16):
        total += len(block)
        if total > limit_mb * 2**20:
            if proc is not None:
                stopped.append(f"sent back more than {limit_mb} MB")
                _kill(proc)
            continue
        chunks.append(block)


def _child_pid(read_fd: int) -> int | None:
    """The sandbox's first process, from bubblewrap's --info-fd (``None`` if it said nothing)."""
    with os.fdopen(read_fd) as info:
        text = info.read()
    try:
        return int(json.loads(text)["child-pid"])
    except (ValueError, KeyError):
        return None


def _watch(proc: subprocess.Popen, inner: int | None, limits: Limits, stopped: list[str]) -> None:
    """Stop the sandbox when it runs more processes than ``limits`` allows."""
    if inner is None:
        return
    try:
        namespace = os.readlink(f"/proc/{inner}/ns/pid")
    except OSError:
        return
    while proc.poll() is None:
        count = 0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    count += os.readlink(f"/proc/{entry.name}/ns/pid") == namespace
                except OSError:
                    continue
        if count > limits.processes:
            stopped.append(f"started more than {limits.processes} processes")
            _kill(proc)
            return
        time.sleep(0.1)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
