"""One writer per output folder: an OS lock (`fcntl.flock`) on `FOLDER/.lock`, held while a command
writes there (train's run folder, sample's --out).

The kernel drops the lock when its process dies, however it dies, so a stale lock never needs
cleaning up. The file holds the holder's pid, for the refusal message. It is removed on release
(so that a command that was refused or failed leaves the folder as it found it); a process that
locked a file which was removed meanwhile sees the inode differ from the path's and tries again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from pixdiff.runtime.distributed import Dist

LOCK_NAME = ".lock"


class FolderLocked(RuntimeError):
    """Another live process writes into the folder."""


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def _acquire(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLocked(f"{path.parent} is in use by {_holder(path)} (one writer per folder: wait for it "
                               "to finish or choose another folder)") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # its holder released and removed it while we waited on it
            same = False
        if same:
            return fd
        os.close(fd)


@contextmanager
def folder_lock(folder: str | os.PathLike, *, enabled: bool = True) -> Iterator[None]:
    """Hold `folder`'s lock for the block (creating the folder); `enabled=False` (ranks other than
    0 under torchrun) holds nothing. Raises FolderLocked, naming the holder's pid, if it is taken.
    A folder this call created is removed again if the block leaves it empty."""
    if not enabled:
        yield
        return
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        fd = _acquire(path)
    except BaseException:
        _remove_if_empty(folder, created)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding it: a waiter that opened it sees the inode gone
        os.close(fd)
        _remove_if_empty(folder, created)


def _remove_if_empty(folder: Path, created: bool) -> None:
    if created and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


@contextmanager
def rank0_lock(folder: str | os.PathLike, d: Dist) -> Iterator[None]:
    """`folder_lock` held by rank 0 under torchrun. If rank 0 cannot take it (held, or an OS error),
    it raises why and every other rank raises FolderLocked, rather than wait on a barrier rank 0
    never reaches."""
    with ExitStack() as stack:
        failure: Exception | None = None
        if d.main:
            try:
                stack.enter_context(folder_lock(folder))
            except (FolderLocked, OSError) as e:
                failure = e
        if d.enabled:
            flag = torch.tensor(float(failure is not None), device=d.device)
            torch.distributed.broadcast(flag, src=0)
            if flag.item() and failure is None:
                failure = FolderLocked(f"{folder}: rank 0 could not lock it (see rank 0's error)")
        if failure is not None:
            raise failure
        yield
