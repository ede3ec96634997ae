"""Config validation at construction: every config dataclass calls `check_fields(self)` first in
its `__post_init__` (each field against its annotation), then `require(...)` for its ranges and
combinations. A failure is a ConfigError (a ValueError) of one line naming `Class.field` and the
bad value, so a bad recipe file, `--set` or stored recipe stops before any data is built or any
file is written; overrides and stored recipes re-word it with the field's dotted key."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A config field with a bad value; `field` is its (dotted) name within the config that checks it."""

    def __init__(self, node: Any, field: str, reason: str):
        value = functools.reduce(getattr, field.split("."), node)
        self.field, self.value, self.reason = field, _short(value), reason
        super().__init__(f"{type(node).__name__}.{field}={self.value}: {reason}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expected(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return f"not one of {list(typing.get_args(annotation))}"
    if annotation is float:
        return "expected a finite float"
    return "expected " + (getattr(annotation, "__name__", None) or str(annotation).replace("typing.", ""))


def matches(value: Any, annotation: Any) -> bool:
    """Whether `value` is of the annotated type: bool is not an int, an int is a float, NaN and
    infinities are not numbers a config wants, tuples match in length and items."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is tuple or annotation is tuple:
        if not isinstance(value, tuple):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if annotation is bool:
        return type(value) is bool
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if getattr(annotation, "_is_protocol", False):  # HeadConfig, Objective: a config dataclass that fits
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            return False
        return not getattr(annotation, "_is_runtime_protocol", False) or isinstance(value, annotation)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation this checker does not model


def check_fields(node: Any) -> None:
    """Raise ValueError (one line) for the first field whose value does not match its annotation."""
    hints = _hints(type(node))
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if not matches(value, hints[f.name]):
            raise ConfigError(node, f.name, _expected(hints[f.name]))


def require(node: Any, name: str, ok: bool, why: str) -> None:
    """Raise ConfigError (one line) naming `Class.name` (dotted for a nested field) and its value unless `ok`."""
    if not ok:
        raise ConfigError(node, name, why)


def positive(node: Any, *names: str) -> None:
    for name in names:
        require(node, name, getattr(node, name) > 0, "must be > 0")
