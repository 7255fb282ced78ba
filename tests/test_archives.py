"""Archives are looked into before they are unpacked: no zip bomb fills the disk."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from course_admin import archives
from course_admin.archives import UnsafeArchive, check_archive

MB = 2**20


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_ordinary_download_passes(tmp_path: Path) -> None:
    notebook = b'{"cells": []}' * 1000
    inner = _zip({"week01_sgd.ipynb": notebook})
    check_archive(_write(tmp_path / "ok.zip", _zip({"a.ipynb": notebook, "b.zip": inner})))


def test_a_zip_bomb_is_refused(tmp_path: Path) -> None:
    bomb = _write(tmp_path / "bomb.zip", _zip({"zeros.ipynb": bytes(12 * MB)}))
    assert bomb.stat().st_size < MB / 10, "the test archive is small on disk"
    with pytest.raises(UnsafeArchive, match="unpacks to more than 10 MB"):
        check_archive(bomb, limit_mb=10)


def test_a_bomb_inside_an_archive_is_refused(tmp_path: Path) -> None:
    inner = _zip({"zeros.ipynb": bytes(12 * MB)})
    outer = _write(tmp_path / "outer.zip", _zip({"week01_sgd_jdoe.zip": inner}))
    with pytest.raises(UnsafeArchive, match="unpacks to more than 10 MB"):
        check_archive(outer, limit_mb=10)
    # Where archives inside stay packed, only the outer one counts.
    check_archive(outer, limit_mb=10, nested=False)


def test_a_tar_gz_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("zeros.ipynb")
        info.size = 12 * MB
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(UnsafeArchive, match="unpacks to more than 10 MB"):
        check_archive(path, limit_mb=10)


def test_archives_nested_too_deep_are_refused(tmp_path: Path) -> None:
    data = _zip({"week01_sgd.ipynb": b"{}"})
    for level in range(archives.MAX_DEPTH - 1):
        data = _zip({f"level{level}.zip": data})
    check_archive(_write(tmp_path / "deep_enough.zip", data))
    data = _zip({"one_more.zip": data})
    with pytest.raises(UnsafeArchive, match="nested more than 3 deep"):
        check_archive(_write(tmp_path / "deep.zip", data))


def test_too_many_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_FILES", 5)
    many = _write(tmp_path / "many.zip", _zip({f"{i}.txt": b"" for i in range(6)}))
    with pytest.raises(UnsafeArchive, match="more than 5 files"):
        check_archive(many)


def test_a_file_that_is_no_archive_is_named(tmp_path: Path) -> None:
    fake = _write(tmp_path / "notes.gz", b"not an archive")
    with pytest.raises(UnsafeArchive, match="notes.gz cannot be read as an archive"):
        check_archive(fake)
