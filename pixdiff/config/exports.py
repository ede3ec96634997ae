"""Lazy re-exports for a package's `__init__` (PEP 562): a public name is imported from its defining
module on first use, so importing a package stays cheap (torch-free where the package is) and
package imports never form a circle."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose public names are `table`'s keys, each
    defined in the module its value names."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__


def exports(module: str, *names: str) -> dict[str, str]:
    """{name: module} for each of `names`: a table row group for `lazy_exports`."""
    return dict.fromkeys(names, module)
