"""Operations on trees of frozen dataclasses (recipes): typed dotted-key overrides and
JSON-safe (de)serialisation that records each node's class, never pickled code.

Decoding a stored tree (a checkpoint's recipe, a run's recipe.json) never runs code that the
file names: a `_type` must be a dataclass of pixdiff or of a registered plugin, and its module
is checked against that allow-list before anything is imported."""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from importlib.metadata import entry_points
from typing import Any, Literal, Union

from pixdiff.config.plugins import ENTRY_POINT_GROUP, LOCAL_PACKAGE, load_local_plugins, local_plugin_dirs
from pixdiff.config.validate import ConfigError


class OverrideError(ValueError):
    pass


class DecodeError(ValueError):
    """A stored tree that does not decode into pixdiff's (or a registered plugin's) config classes."""


def leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """All dotted keys of scalar fields below `node`."""
    keys = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            keys += leaf_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse `text` into a value of the annotated type, or raise OverrideError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(text, arg, key)
            except OverrideError:
                pass
        raise OverrideError(f"{key}: cannot parse {text!r} as {annotation}")
    if origin is Literal:  # anything else is left to the config's validation, which says why
        return next((choice for choice in args if str(choice) == text), text)
    if origin is tuple:
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        item_types = [args[0]] * len(parts) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(parts):
            raise OverrideError(f"{key}: expected {len(item_types)} comma-separated values, got {text!r}")
        return tuple(parse_value(p.strip(), a, key) for p, a in zip(parts, item_types))
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise OverrideError(f"{key}: {text!r} is not a boolean (true/false)")
    if annotation in (int, float, str):
        try:
            return annotation(text)
        except ValueError:
            raise OverrideError(f"{key}: {text!r} is not a valid {annotation.__name__}") from None
    raise OverrideError(f"{key}: values of type {annotation} cannot be set from the command line")


def _apply(node: Any, changes: dict[str, str], prefix: str) -> Any:
    """Set every dotted key of `changes` below `node` together: each section is rebuilt once, with
    its final values, so its validation judges the combination (not the order of the --set flags)."""
    hints, fields = _hints(type(node)), {f.name for f in dataclasses.fields(node)}
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, str]] = {}
    for key, text in changes.items():
        head, _, rest = key.partition(".")
        full = prefix + key
        if head not in fields:
            raise OverrideError(f"unknown key {full!r}; valid keys: " + ", ".join(leaf_keys(node, prefix)))
        current = getattr(node, head)
        if rest:
            nested.setdefault(head, {})[rest] = text
        elif dataclasses.is_dataclass(current):
            raise OverrideError(f"{full!r} is a section; set one of: " + ", ".join(leaf_keys(current, f"{full}.")))
        else:
            direct[head] = parse_value(text, hints[head], full)
    for head, sub in nested.items():
        current = getattr(node, head)
        if current is None:
            current = _empty_section(hints[head], prefix + head)
        if not dataclasses.is_dataclass(current):
            raise OverrideError(f"{prefix + head!r} is a value, not a section; cannot set {prefix + next(iter(sub))!r}")
        direct[head] = _apply(current, sub, f"{prefix}{head}.")
    try:
        return dataclasses.replace(node, **direct)
    except ConfigError as e:  # a field of this section: name it by its dotted key
        raise OverrideError(f"{prefix}{e.field}={e.value}: {e.reason}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, OverrideError):
            raise
        raise OverrideError(f"{prefix.rstrip('.')}: {e}" if prefix else str(e)) from None


def _empty_section(annotation: Any, key: str) -> Any:
    """An optional section that is None (e.g. train.repa): start from its defaults, if it has them.

    Required fields hold a placeholder `None` until set; applying the overrides rebuilds the
    section through its constructor, which validates it."""
    options = [a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)]
    if not options:
        raise OverrideError(f"{key!r}: its section is empty and has no known type")
    cls = options[0]
    section = object.__new__(cls)  # bypass validation: it runs when the override is applied
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        object.__setattr__(section, f.name, None if default is dataclasses.MISSING else default)
    return section


def apply_overrides(root: Any, assignments: list[str]) -> Any:
    """Apply `key=value` strings together (a key set twice takes its last value)."""
    changes = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise OverrideError(f"override {item!r} is not of the form key=value")
        changes[key.strip()] = text.strip()
    return _apply(root, changes, "") if changes else root


def to_dict(node: Any) -> Any:
    """Dataclass tree -> JSON-safe dict; each dataclass node records its class as `_type`."""
    if dataclasses.is_dataclass(node):
        out = {"_type": f"{type(node).__module__}:{type(node).__qualname__}"}
        out.update({f.name: to_dict(getattr(node, f.name)) for f in dataclasses.fields(node)})
        return out
    if isinstance(node, (tuple, list)):
        return [to_dict(v) for v in node]
    return node


def _plugin_modules() -> set[str]:
    """Modules a registered plugin may keep config classes in: each `./plugins` (or
    $PIXDIFF_PLUGINS) file, each `pixdiff.plugins` entry point's module."""
    local = {f"{LOCAL_PACKAGE}.{p.stem}" for d in local_plugin_dirs() for p in d.glob("[!_]*.py")}
    return local | {ep.module for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _allowed(module: str, plugins: set[str]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in ("pixdiff", *plugins))


# Modules that held config classes before the layered layout (0.1.0): files written then name them.
MOVED_MODULES = {
    "pixdiff.model": "pixdiff.nn.model",
    "pixdiff.backbone": "pixdiff.nn.backbone",
    "pixdiff.heads": "pixdiff.nn.heads",
    "pixdiff.objectives": "pixdiff.diffusion.objectives",
}


def _current_module(module: str) -> str:
    for old, new in MOVED_MODULES.items():
        if module == old or module.startswith(old + "."):
            return new + module[len(old):]
    return module


def _import_class(path: Any, where: str) -> type:
    """The config class named by `path` ("module:qualname"), imported only from allowed modules."""
    refuse = f"{where}: refusing _type {path!r}: only config dataclasses of pixdiff or of a registered plugin load"
    if not isinstance(path, str) or path.count(":") != 1:
        raise DecodeError(refuse)
    module_name, qualname = path.split(":")
    module_name = _current_module(module_name)
    plugins = set() if _allowed(module_name, set()) else _plugin_modules()
    if module_name.startswith(LOCAL_PACKAGE + ".") and module_name not in plugins:
        raise DecodeError(f"{where}: _type {path!r} comes from the local plugin file {module_name.split('.', 1)[1]}.py, "
                          "which is not found here: point $PIXDIFF_PLUGINS at the folder the run was trained with")
    if not _allowed(module_name, plugins) or not qualname or any(p.startswith("__") for p in qualname.split(".")):
        raise DecodeError(refuse)
    try:
        if module_name.startswith(LOCAL_PACKAGE + "."):
            load_local_plugins()  # plugin files are imported under their registered names
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise DecodeError(f"{where}: _type {path!r} does not exist (a newer pixdiff or a missing plugin?)") from None
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj) and _allowed(obj.__module__, plugins)):
        raise DecodeError(refuse)
    return obj


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if isinstance(value, list) and (origin is tuple or annotation is tuple):
        return tuple(value)
    if origin in (Union, types.UnionType) and isinstance(value, list):
        return tuple(value)
    return value


def from_dict(data: Any, where: str = "recipe") -> Any:
    """Inverse of `to_dict`, for untrusted input: only JSON values and allowed config classes.
    Raises DecodeError (one line, naming the dotted place `where`) for anything else."""
    if isinstance(data, dict):
        if "_type" not in data or not all(isinstance(k, str) for k in data):
            raise DecodeError(f"{where}: a stored section must be a config with a _type")
        cls = _import_class(data["_type"], where)
        hints = _hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names - {"_type"})
        if unknown:
            raise DecodeError(f"{where}: {data['_type']} has no field named {', '.join(unknown)}")
        kwargs = {k: _coerce(from_dict(v, f"{where}.{k}"), hints[k]) for k, v in data.items() if k != "_type"}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise DecodeError(f"{where}.{e.field}={e.value}: {e.reason}" if isinstance(e, ConfigError)
                              else f"{where}: {e}") from None
    if isinstance(data, list):
        return [from_dict(v, f"{where}[{i}]") for i, v in enumerate(data)]
    if data is None or isinstance(data, (str, int, float, bool)):
        return data
    raise DecodeError(f"{where}: unexpected {type(data).__name__} value (stored recipes hold only JSON values)")


def replace(node: Any, **changes: Any) -> Any:
    """`dataclasses.replace` that also takes dotted keys into nested sections: `**{"train.lr": 2e-4}`.

    Changes to one section are applied together, so validation sees the final combination."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = replace(direct.get(head, getattr(node, head)), **sub)
    return dataclasses.replace(node, **direct)
