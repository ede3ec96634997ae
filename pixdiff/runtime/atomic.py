"""The one way files are written: to a hidden temp file in the same folder, fsync, then rename.

A crash or a kill never leaves half a file under the final name; a kill may leave the hidden
`.NAME.*.tmp` file behind (see `checkpoint.remove_stale_temps`).
"""

from __future__ import annotations

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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
