"""The one way files are written: to a hidden temp file in the same folder, fsync, then rename.

A crash or a kill never leaves half a file under the final name; a kill may leave the hidden
`.NAME.*.tmp` file behind (see `checkpoint.remove_stale_temps`). A failed write removes its temp
file and raises the OSError behind it (writers such as torch.save wrap a full disk in a
RuntimeError that says "unexpected pos"), named after the final path; `describe` puts it in words.
Some writers (np.save) raise an OSError with no errno on a full disk: then the free space of the
target's file system decides whether it is reported as ENOSPC.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | os.PathLike, *, text: bool = False) -> Iterator[IO[Any]]:
    """`with atomic_write(path) as f: ...` writes `path` all at once or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x" if text else "xb") as f:  # plain open: the file gets the usual umask permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        cause = os_error(e)
        # Free space is read before the temp file goes: removing it gives back what filled the disk.
        named = None if cause is None or isinstance(e, KeyboardInterrupt) else named_error(cause, path)
        tmp.unlink(missing_ok=True)
        if named is not None:
            raise named from None
        raise


def named_error(e: OSError, path: Path) -> OSError:
    """`e` as an OSError about `path`, with an errno where the OS gave none but the disk is full."""
    if e.errno is None and disk_full(path):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(e.errno, e.strerror or error_text(e), str(path))


def os_error(e: BaseException | None) -> OSError | None:
    """The OSError an exception is or was raised while handling (its __context__ chain), if any."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return e


# Under this many free bytes a write that failed without an errno is taken to have filled the disk:
# the last buffer a writer flushes is smaller than this, so "full" may leave a little.
NEARLY_FULL = 1 << 20


def disk_full(path: str | os.PathLike) -> bool:
    """Whether the file system that holds `path` (or its nearest existing folder) has (nearly) no
    space or no inodes left for an ordinary user; False where that cannot be told."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        st = os.statvfs(where)
    except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
        return False
    return st.f_bavail * st.f_frsize < NEARLY_FULL or (st.f_files > 0 and st.f_favail == 0)


def error_text(e: BaseException) -> str:
    """What an exception says, without the "[Errno None] None" of an OSError built with no errno;
    its type's name when it says nothing."""
    args = e.args[1:2] if isinstance(e, OSError) and len(e.args) >= 2 else e.args
    return " ".join(str(a) for a in args if a is not None) or type(e).__name__


CAUSES = {errno.ENOSPC: "disk full (No space left on device)", errno.EDQUOT: "disk quota exceeded",
          errno.EROFS: "read-only file system",
          errno.EACCES: "permission denied", errno.EPERM: "permission denied",
          errno.EEXIST: "a file is in the way of a folder", errno.ENOTDIR: "a file is in the way of a folder",
          errno.EISDIR: "a folder is in the way of a file", errno.ENOENT: "no such file or folder"}


def describe(e: OSError) -> str:
    """One line: the path and the cause in words, e.g.
    'runs/x/checkpoints/step_00000030.pt: disk full (No space left on device)'."""
    if e.errno is None and e.filename and disk_full(e.filename):
        e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), e.filename)
    cause = CAUSES.get(e.errno, e.strerror or error_text(e)) if e.errno is not None else error_text(e)
    return f"{e.filename}: {cause}" if e.filename else cause


@contextmanager
def scratch_folder(path: str | os.PathLike, *, owner: bool = True) -> Iterator[Path]:
    """`with scratch_folder(out / ".parts", owner=rank == 0) as parts: ...` makes the folder and,
    for its owner, removes it when the block ends, on success or failure, so no temp parts outlive
    the command. Every rank may write into it; only the owner (which reads the parts last) removes it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if owner:
            shutil.rmtree(path, ignore_errors=True)


class WriteFailed(RuntimeError):
    """The OS refused a write (disk full, read-only, no permission, a file in the way); the message
    names the path, the cause and what was kept."""
