"""Plugin discovery: the entry-point group `pixdiff.plugins` and the local `plugins/` folder.

A plugin is a module that may define, at module level,
    HEADS:   dict[str, type]       name -> head config class (see pixdiff.nn.heads)
    RECIPES: dict[str, callable]   name -> function returning a Recipe (`pixdiff train plugin:NAME`)
Local plugins are the `*.py` files of $PIXDIFF_PLUGINS, of `./plugins`, and of the bundled example folder
(the clone's plugins/, or its copy in a wheel: see `pixdiff.config.bundled`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from pixdiff.config.bundled import bundled_dir
from pixdiff.config.pyfile import import_file

ENTRY_POINT_GROUP = "pixdiff.plugins"
LOCAL_PACKAGE = "pixdiff_local_plugins"


class PluginError(RuntimeError):
    pass


@dataclass(frozen=True)
class Plugins:
    heads: dict[str, type] = field(default_factory=dict)
    recipes: dict[str, Callable[[], Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # "HEADS:name" -> the plugin that defined it


def local_plugin_dirs() -> list[Path]:
    dirs = [Path(os.environ["PIXDIFF_PLUGINS"])] if os.environ.get("PIXDIFF_PLUGINS") else []
    dirs += [Path.cwd() / "plugins", bundled_dir("plugins")]
    unique = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def _import_plugin(path: Path) -> ModuleType:
    name = f"{LOCAL_PACKAGE}.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    sys.modules.setdefault(LOCAL_PACKAGE, ModuleType(LOCAL_PACKAGE))  # a namespace, so class paths round-trip
    try:
        return import_file(path, name)
    except Exception as e:
        raise PluginError(f"plugin {path.stem!r} ({path}) failed to load: {type(e).__name__}: {e}") from e


def load_local_plugins() -> list[tuple[str, ModuleType]]:
    return [(str(path), _import_plugin(path)) for d in local_plugin_dirs() for path in sorted(d.glob("[!_]*.py"))]


def _load_entry_points() -> list[tuple[str, ModuleType]]:
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded.append((f"entry point {ep.name} ({ep.value})", ep.load()))
        except Exception as e:
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value}) failed to load: "
                              f"{type(e).__name__}: {e}") from e
    return loaded


def discover() -> Plugins:
    """Load every plugin; a broken one raises PluginError naming it."""
    plugins = Plugins()
    for source, module in load_local_plugins() + _load_entry_points():
        for attr, table in (("HEADS", plugins.heads), ("RECIPES", plugins.recipes)):
            entries = getattr(module, attr, {})
            if not isinstance(entries, dict):
                raise PluginError(f"plugin {source}: {attr} must be a dict, got {type(entries).__name__}")
            for name, obj in entries.items():
                key = f"{attr}:{name}"
                if key in plugins.sources:
                    raise PluginError(f"plugin {source}: {attr} name {name!r} is already defined by {plugins.sources[key]}")
                table[name] = obj
                plugins.sources[key] = source
    return plugins
