"""Look inside an archive before unpacking it: a submission must not fill the disk.

nbgrader's ``zip_collect`` unpacks every archive it finds in the downloads, and the archives
inside those, until none is left. A student can upload a small zip that unpacks to many GB
(a zip bomb) or holds itself again and again. The batch checks each archive first and leaves
out the ones that would unpack to more than ``COURSE_MAX_UNPACKED_MB``, hold more than
``MAX_FILES`` files or nest deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import IO

MAX_UNPACKED_MB = float(os.environ.get("COURSE_MAX_UNPACKED_MB", "2048"))
MAX_DEPTH = 3  # an archive in an archive in an archive; LMS downloads need two
MAX_FILES = 20_000  # a class's notebooks and data files, with room to spare
ARCHIVE_SUFFIXES = (".zip", ".gz")  # what nbgrader's zip_collect unpacks


class UnsafeArchive(Exception):
    """An archive that must not be unpacked; the message says why."""


def check_archive(path: Path, limit_mb: float | None = None, nested: bool = True) -> None:
    """Raise :class:`UnsafeArchive` if unpacking ``path`` would write too much, or nest too deep.

    Counts the sizes the archive declares for its files (zipfile never writes more than a
    member declares), and with ``nested`` those of the archives inside, which zip_collect
    unpacks too.
    """
    limit = int((MAX_UNPACKED_MB if limit_mb is None else limit_mb) * 2**20)
    with path.open("rb") as f:
        total = _unpacked_bytes(f, path.name, depth=1, budget=limit, nested=nested)
    if total > limit:
        raise UnsafeArchive(f"unpacks to more than {limit / 2**20:g} MB")


def _unpacked_bytes(f: IO[bytes], name: str, depth: int, budget: int, nested: bool) -> int:
    """Bytes written by unpacking archive ``f``; stops counting once over ``budget``."""
    if depth > MAX_DEPTH:
        raise UnsafeArchive(f"archives nested more than {MAX_DEPTH} deep")
    try:
        if zipfile.is_zipfile(f):
            f.seek(0)
            archive = zipfile.ZipFile(f)
            members = (
                (i.filename, i.file_size, partial(archive.open, i)) for i in archive.infolist()
            )
            return _count(members, depth, budget, nested)
        f.seek(0)
        with tarfile.open(fileobj=f, mode="r:*") as tar:
            files = (m for m in tar if m.isfile())
            members = ((m.name, m.size, partial(tar.extractfile, m)) for m in files)
            return _count(members, depth, budget, nested)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeArchive(f"{name} cannot be read as an archive ({exc})") from None


def _count(
    members: Iterable[tuple[str, int, Callable]], depth: int, budget: int, nested: bool
) -> int:
    """Sum the sizes of (name, size, open) members, opening nested archives to count them too."""
    total = 0
    for count, (name, size, open_member) in enumerate(members, 1):
        if count > MAX_FILES:
            raise UnsafeArchive(f"holds more than {MAX_FILES} files")
        total += size
        if nested and total <= budget and name.endswith(ARCHIVE_SUFFIXES):
            with open_member() as inner:
                total += _unpacked_bytes(inner, name, depth + 1, budget - total, nested)
        if total > budget:
            break
    return total
