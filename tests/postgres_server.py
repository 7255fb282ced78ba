"""A throwaway PostgreSQL server for the tests that need one.

``initdb`` and ``pg_ctl`` from the machine's PostgreSQL (Debian's ``postgresql`` package, which
``./course test`` installs where it can) make a cluster in a temporary folder, listening on
127.0.0.1 only, with trust authentication for one user; it is stopped and deleted at the end.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "course"


def binaries() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl`` (the newest installed), if any."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    for folder in reversed(candidates):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


class PostgresServer:
    """One cluster: :meth:`start`, :meth:`url` of a new database, :meth:`stop`."""

    def __init__(self) -> None:
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="course-postgres-"))
        self.port = _free_port()
        self._databases = 0

    def _as_server_user(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, cwd=self.root
        )

    def start(self) -> str | None:
        """Start the server; ``None``, or why it could not start."""
        if self.bin is None:
            return "PostgreSQL's initdb and pg_ctl are not installed (Debian: package postgresql)"
        data = self.root / "data"
        if os.geteuid() == 0:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
        steps = [
            [str(self.bin / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8"],
            [
                str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-w",
                "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}", "start",
            ],
        ]  # fmt: skip
        for step in steps:
            proc = self._as_server_user(*step)
            if proc.returncode != 0:
                return f"{Path(step[0]).name} failed: {(proc.stderr or proc.stdout)[-500:]}"
        return None

    def url(self) -> str:
        """A new, empty database on this server, as a SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"course_{self._databases}"
        address = {"host": "127.0.0.1", "port": self.port, "user": USER, "dbname": "postgres"}
        with psycopg.connect(**address, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self.bin is not None and (self.root / "data").exists():
            self._as_server_user(
                str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop"
            )
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
