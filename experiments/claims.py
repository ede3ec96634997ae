"""A job queue shared by worker processes through the file system: a worker runs a job only after
creating its claim file, which exactly one process can do (O_CREAT | O_EXCL). Two workers on two
cores thus split jobs of uneven cost evenly, where a fixed K/M split of the list would not.

Claims outlive a killed worker: clear them (`clear`) before starting workers again; the jobs'
own result files say which are done.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def claim(folder: Path, key: str) -> bool:
    """True for exactly one caller per (folder, key) until `clear(folder)`."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
