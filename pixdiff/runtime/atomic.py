"""The one way files are written: to a hidden temp file in the same folder, fsync, then rename.

A crash or a kill never leaves half a file under the final name; a kill may leave the hidden
`.NAME.*.tmp` file behind (see `checkpoint.remove_stale_temps`). A failed write removes its temp
file and raises the OSError behind it (writers such as torch.save wrap a full disk in a
RuntimeError that says "unexpected pos"), named after the final path; `describe` puts it in words.
"""

from __future__ import annotations

import errno
import os
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
        tmp.unlink(missing_ok=True)
        cause = os_error(e)
        if cause is not None and not isinstance(e, KeyboardInterrupt):
            raise OSError(cause.errno, cause.strerror, str(path)) from None
        raise


def os_error(e: BaseException | None) -> OSError | None:
    """The OSError an exception is or was raised while handling (its __context__ chain), if any."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return e


CAUSES = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
          errno.EACCES: "permission denied", errno.EPERM: "permission denied",
          errno.EEXIST: "a file is in the way of a folder", errno.ENOTDIR: "a file is in the way of a folder",
          errno.EISDIR: "a folder is in the way of a file", errno.ENOENT: "no such file or folder"}


def describe(e: OSError) -> str:
    """One line: the path and the cause in words, e.g. 'runs/x/checkpoints/step_00000030.pt: disk full'."""
    cause = CAUSES.get(e.errno, e.strerror or str(e))
    return f"{e.filename}: {cause}" if e.filename else cause


class WriteFailed(RuntimeError):
    """The OS refused a write (disk full, read-only, no permission, a file in the way); the message
    names the path, the cause and what was kept."""
