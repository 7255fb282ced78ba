"""What the sandbox, a PostgreSQL gradebook and two shards cost a whole class, in one run.

    python benchmarks/grading_batch.py [--week week01_sgd] [--class-size 8]

A class of N copies of the week's solution is graded with ``./course grade``'s defaults
(``python -m course_admin grade``, default workers) four ways, each on a fresh copy of the
course released into its own gradebook:

1. SQLite gradebook, every student in the sandbox (the default);
2. SQLite gradebook, ``--no-sandbox`` (what the sandbox costs: 1 against 2);
3. PostgreSQL gradebook, in the sandbox;
4. PostgreSQL gradebook, the class split as ``--shard 1/2`` and ``--shard 2/2`` run at once
   (what two machines would do; here both share this machine's cores).

PostgreSQL is a throwaway server from ``tests/postgres_server.py`` (Debian's ``postgresql``
package); without it, 3 and 4 are left out, saying why.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from grading_overhead import REPO, check, class_of, copy_course, grade_command  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402


def timed(commands: list[tuple[list[str], dict[str, str]]], cwd: Path, week: str) -> float:
    """Seconds until every command (started together) has finished."""
    start = time.perf_counter()
    pipe = subprocess.PIPE
    procs = [
        subprocess.Popen(c, env=e, cwd=cwd, stdout=pipe, stderr=pipe, text=True)
        for c, e in commands
    ]
    for proc in procs:
        out, err = proc.communicate()
        check(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), week)
    return time.perf_counter() - start


def variant(
    tmp: Path, name: str, week: str, size: int, shards: list[list[str]], env: dict
) -> float:
    """Grade a fresh course's class of ``size`` as ``shards`` (one option list per command)."""
    autograder = copy_course(REPO, tmp / name, [week], env)
    incoming = class_of(autograder, week, size, name)
    commands = [grade_command(autograder, week, incoming, options, env) for options in shards]
    return timed(commands, autograder.parent, week)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--week", default="week01_sgd")
    parser.add_argument("--class-size", type=int, default=8)
    args = parser.parse_args()
    week, size = args.week, args.class_size
    rows: list[tuple[str, float]] = []
    server = PostgresServer()
    why = server.start()
    try:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            rows.append(("SQLite, sandboxed", variant(tmp, "sqlite", week, size, [[]], {})))
            rows.append(
                ("SQLite, --no-sandbox", variant(tmp, "bare", week, size, [["--no-sandbox"]], {}))
            )
            if why is None:
                pg = {"COURSE_DB_URL": server.url()}
                rows.append(("PostgreSQL, sandboxed", variant(tmp, "pg", week, size, [[]], pg)))
                halves = [["--shard", "1/2"], ["--shard", "2/2"]]
                pg = {"COURSE_DB_URL": server.url()}
                rows.append(
                    ("PostgreSQL, 2 shards at once", variant(tmp, "pg2", week, size, halves, pg))
                )
    finally:
        server.stop()
    first = rows[0][1]
    print(f"\n{week}, a class of {size}, default workers")
    print(f"{'':30} {'seconds':>8} {'s/student':>10} {'vs 1':>6}")
    for i, (label, seconds) in enumerate(rows, 1):
        print(f"{i}. {label:27} {seconds:8.1f} {seconds / size:10.2f} {seconds / first:6.2f}")
    if why is not None:
        print(f"(PostgreSQL left out: {why})")


if __name__ == "__main__":
    main()
