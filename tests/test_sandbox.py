"""The grading sandbox, one escape at a time: what code inside it can see, write, reach and leave.

Each test runs a small Python program inside the sandbox that ``./course grade`` builds for a
student's notebook (the same mounts, environment and limits) and checks, from outside, that it
got nowhere. Skips where bubblewrap cannot make a sandbox.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from course_admin import sandbox

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    sandbox.unavailable() is not None, reason=f"no sandbox here: {sandbox.unavailable()}"
)


def _run(code: str, limits: sandbox.Limits | None = None, **env: str) -> sandbox.Outcome:
    """Run ``code`` with the course's Python inside a sandbox like a student's."""
    environment = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp/home"}
    environment.update(env)
    return sandbox.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        sandbox.Mounts(),
        environment,
        limits or sandbox.Limits(timeout_s=60),
    )


def test_the_course_and_the_instructors_home_are_not_there() -> None:
    outcome = _run(
        f"""
        import os
        for path in [{str(REPO / "source")!r}, {str(REPO / "solutions")!r},
                     {str(REPO / "autograder")!r}, {os.path.expanduser("~")!r} + "/.bashrc"]:
            print(path, os.path.exists(path))
        print(sorted(os.listdir({str(REPO)!r})))
        """
    )
    lines = outcome.stdout.decode().splitlines()
    assert outcome.returncode == 0, outcome.stderr
    assert all(line.endswith("False") for line in lines[:4]), lines
    # Only the environment is mounted from the repository (optlab comes in the kit).
    assert set(eval(lines[4])) <= {".venv"}, lines[4]


def test_a_course_under_tmp_still_finds_its_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout in /tmp (a CI clone, a scratch copy) keeps its environment in the sandbox:
    the environment is mounted over the private /tmp, not hidden by it."""
    venv = Path("/tmp/some-clone/.venv")
    monkeypatch.setattr(sandbox, "python_paths", lambda: [(venv, venv)])
    args = sandbox.bwrap_command(["true"], sandbox.Mounts(), {}, sandbox.Limits())
    pairs = list(zip(args, args[1:], strict=False))
    private_tmp = pairs.index(("--tmpfs", "/tmp"))
    venv_bound = pairs.index(("--ro-bind", str(venv)))
    assert venv_bound > private_tmp, args


def test_an_environment_behind_a_symbolic_link_still_runs(tmp_path: Path) -> None:
    """A course whose ``.venv`` is a symbolic link to an environment elsewhere: the grader runs
    the interpreter by the link's path, so the sandbox must have the environment there too."""
    link = tmp_path / ".venv"
    link.symlink_to(Path(sys.prefix).resolve(), target_is_directory=True)
    grader = """
        import sys
        from course_admin import sandbox
        outcome = sandbox.run(
            [sys.executable, "-c", "import sys, torch; print(sys.prefix)"],
            sandbox.Mounts(), {"PATH": "/usr/bin:/bin"}, sandbox.Limits(timeout_s=60),
        )
        print(outcome.returncode, outcome.stdout.decode().strip(), outcome.stderr[-300:])
    """
    proc = subprocess.run(
        [str(link / "bin" / "python"), "-c", textwrap.dedent(grader)],
        env=dict(os.environ, PYTHONPATH=str(REPO / "autograder")),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout.split()[:2] == ["0", str(link)], proc.stdout + proc.stderr


def test_nothing_outside_tmp_can_be_written(tmp_path: Path) -> None:
    target = tmp_path / "written-from-the-sandbox"
    outcome = _run(
        f"""
        import os
        for path in ["/x", {str(REPO / "x")!r}, "/var/tmp/x", {str(target)!r}, "/dev/x",
                     {os.path.expanduser("~")!r} + "/x"]:
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as exc:
                print("refused", path, exc.errno)
        open("/tmp/ok", "w").write("private")
        print("tmp ok")
        """
    )
    out = outcome.stdout.decode()
    assert "tmp ok" in out, out + outcome.stderr
    # Only the private /tmp takes writes (a checkout under /tmp then writes into it, not into
    # the real folder); nothing appears outside.
    written = [line.split()[1] for line in out.splitlines() if line.startswith("wrote")]
    assert all(path.startswith("/tmp/") for path in written), out
    assert not target.exists() and not (REPO / "x").exists()


def test_the_private_tmp_has_a_size_limit() -> None:
    outcome = _run(
        """
        import errno
        try:
            with open("/tmp/big", "wb") as f:
                for _ in range(64):
                    f.write(bytes(2**20))
        except OSError as exc:
            print("full", exc.errno == errno.ENOSPC)
        """,
        sandbox.Limits(timeout_s=60, disk_mb=16),
    )
    assert outcome.stdout.decode().strip() == "full True", outcome.stderr


def test_no_network_reaches_outside() -> None:
    received: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]

        def accept() -> None:
            end = time.time() + 15
            while time.time() < end:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                received.append(conn.recv(100))
                conn.close()

        thread = threading.Thread(target=accept)
        thread.start()
        outcome = _run(
            f"""
            import socket
            for host in ["127.0.0.1", "localhost"]:
                try:
                    socket.create_connection((host, {port}), timeout=3).sendall(b"secret")
                    print("sent")
                except OSError as exc:
                    print("refused", exc)
            """
        )
        thread.join()
    assert "sent" not in outcome.stdout.decode(), outcome.stdout
    assert received == []


def test_nothing_it_starts_outlives_it() -> None:
    marker = f"course-sandbox-survivor-{os.getpid()}"
    outcome = _run(
        f"""
        import os, subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}],
                         start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)",
                                          {marker!r}])
            os._exit(0)
        print("started")
        """
    )
    assert "started" in outcome.stdout.decode(), outcome.stderr
    time.sleep(0.5)
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                alive.append(entry.name)
        except OSError:
            continue
    assert alive == []


def test_a_process_storm_is_stopped() -> None:
    outcome = _run(
        """
        import os, time
        for _ in range(200):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        time.sleep(60)
        """,
        sandbox.Limits(timeout_s=60, processes=20),
    )
    assert outcome.stopped == "started more than 20 processes", outcome
    assert outcome.wall_s < 30


def test_the_instructors_environment_is_not_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DB_URL", "postgresql://teacher:secret@db/course")
    outcome = _run("import os; print(sorted(os.environ))")
    assert "COURSE_DB_URL" not in outcome.stdout.decode()


def test_memory_per_process_is_limited() -> None:
    outcome = _run(
        """
        try:
            block = bytearray(3 * 2**30)
            print("allocated")
        except MemoryError:
            print("refused")
        """,
        sandbox.Limits(timeout_s=60, memory_gb=1),
    )
    assert outcome.stdout.decode().strip() == "refused", outcome.stderr
