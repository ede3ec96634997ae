"""Run a Python file as a named module (recipe files, local plugins)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_file(path: Path, name: str) -> ModuleType:
    """Execute `path` as module `name`, registered in sys.modules so that classes defined there can
    be found again by `module:qualname`. If the file raises, nothing stays registered."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
