"""Atomic writes on a full disk: one line naming the path and "No space left on device", even when
the writer's OSError carries no errno (np.save), and never a temp file left behind."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import numpy as np
import pytest

from pixdiff.runtime import atomic
from pixdiff.runtime.atomic import atomic_write, describe, scratch_folder


def free_space(monkeypatch, free_bytes: int) -> None:
    """The target's file system reports `free_bytes` free (and inodes to spare)."""
    fake = SimpleNamespace(f_bavail=free_bytes // 4096, f_frsize=4096, f_files=1000, f_favail=500)
    monkeypatch.setattr(atomic.os, "statvfs", lambda path: fake)


def failing_save(monkeypatch, exc: OSError) -> None:
    def save(f, arr):
        f.write(b"partial")  # what filled the disk
        raise exc

    monkeypatch.setattr(np, "save", save)


def write_npy(path) -> str:
    with pytest.raises(OSError) as info:
        with atomic_write(path) as f:
            np.save(f, np.zeros(3))
    return describe(info.value)


@pytest.mark.parametrize("exc", [OSError(), OSError(None, None), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))],
                         ids=["bare", "errno-None", "ENOSPC"])
def test_a_full_disk_names_the_path_and_no_space_left(tmp_path, monkeypatch, exc):
    free_space(monkeypatch, 0)
    failing_save(monkeypatch, exc)
    target = tmp_path / "out" / "part.npy"
    assert write_npy(target) == f"{target}: disk full (No space left on device)"
    assert list((tmp_path / "out").iterdir()) == []  # the temp file is gone


@pytest.mark.parametrize("exc, text", [(OSError("stream closed"), "stream closed"), (OSError(), "OSError"),
                                       (OSError(None, None), "OSError")])
def test_an_errorless_oserror_with_space_left_says_what_it_was(tmp_path, monkeypatch, exc, text):
    free_space(monkeypatch, 10 << 30)
    failing_save(monkeypatch, exc)
    target = tmp_path / "part.npy"
    line = write_npy(target)
    assert line == f"{target}: {text}" and "None" not in line
    assert list(tmp_path.iterdir()) == []


def test_free_space_is_read_before_the_temp_file_is_removed(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(atomic, "disk_full", lambda path: seen.append(list(tmp_path.iterdir())) or True)
    failing_save(monkeypatch, OSError())
    write_npy(tmp_path / "part.npy")
    assert len(seen[0]) == 1 and seen[0][0].name.endswith(".tmp")


def test_describe_checks_the_disk_for_an_oserror_without_errno(tmp_path, monkeypatch):
    free_space(monkeypatch, 100)
    assert describe(OSError(None, None, str(tmp_path / "new" / "x.npy"))) == \
        f"{tmp_path / 'new' / 'x.npy'}: disk full (No space left on device)"
    free_space(monkeypatch, 10 << 30)
    assert describe(OSError(None, None, "x.npy")) == "x.npy: OSError"


def test_no_inodes_left_is_a_full_disk(tmp_path, monkeypatch):
    fake = SimpleNamespace(f_bavail=1 << 20, f_frsize=4096, f_files=1000, f_favail=0)
    monkeypatch.setattr(atomic.os, "statvfs", lambda path: fake)
    assert atomic.disk_full(tmp_path)


def test_a_file_system_that_cannot_be_asked_is_not_called_full(tmp_path, monkeypatch):
    monkeypatch.delattr(atomic.os, "statvfs", raising=False)
    assert not atomic.disk_full(tmp_path)


def test_scratch_folder_is_removed_by_its_owner_even_on_failure(tmp_path):
    parts = tmp_path / "out" / ".parts"
    with pytest.raises(OSError):
        with scratch_folder(parts) as p:
            (p / "rank00000.npy").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not parts.exists()
    with scratch_folder(parts, owner=False) as p:
        (p / "rank00001.npy").write_bytes(b"x")
    assert (parts / "rank00001.npy").exists()  # another rank's folder stays for the owner to read
