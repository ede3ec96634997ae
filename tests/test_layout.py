"""The package's layers, checked on the import graph built from the source (ast, nothing imported).

A module may import from its own unit or from a unit of a lower layer; never sideways into another
unit of its layer, never upwards. Imports under TYPE_CHECKING and inside functions count too: they
are where circles start. Inside a unit, module imports must not form a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# THE map of the house, bottom to top; a unit is a subpackage, a top-level module or a folder of the
# repository. docs/architecture.md and the README show this table (checked below, so they cannot drift).
LAYERS = [
    ["pixdiff.about", "pixdiff.config", "pixdiff.runtime"],
    ["pixdiff.nn", "pixdiff.diffusion", "pixdiff.data"],
    ["pixdiff.recipe", "pixdiff.eval", "pixdiff.testing"],
    ["pixdiff.checkpoints", "recipes", "plugins"],
    ["pixdiff.pipelines"],
    ["pixdiff.train"],
    ["pixdiff.bench", "experiments"],
    ["pixdiff.commands"],
    ["pixdiff.cli"],
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}
# the root package only re-exports lazily (module __getattr__), so it sits above everything
ROOT_PACKAGE = "pixdiff"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    files = [*ROOT.glob("pixdiff/**/*.py"), *ROOT.glob("experiments/*.py"), *ROOT.glob("recipes/*.py"),
             *ROOT.glob("plugins/*.py")]
    return {module_name(p): p for p in files}


def imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that `path` imports, resolved to the deepest module that exists."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def unit(module: str) -> str | None:
    for u in sorted(LAYER, key=len, reverse=True):
        if module == u or module.startswith(u + "."):
            return u
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: imports(path, name, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_declared_layer(graph):
    assert [m for m in graph if m != ROOT_PACKAGE and unit(m) is None] == []


def test_no_import_runs_sideways_or_up_the_layers(graph):
    bad = []
    for module, deps in graph.items():
        if module == ROOT_PACKAGE:
            continue
        for dep in deps:
            if dep == ROOT_PACKAGE:
                bad.append(f"{module} -> {dep} (import the defining module, not the root)")
            elif unit(dep) != unit(module) and LAYER[unit(dep)] >= LAYER[unit(module)]:
                bad.append(f"{module} -> {dep}")
    assert bad == []


def test_no_import_circle(graph):
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                circles.append(" -> ".join(stack[stack.index(d):] + [m, d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert circles == []


def test_the_checker_sees_an_upward_import(tmp_path):
    # negative control: the same parser on a module of layer 1 that imports layer 2
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pixdiff.nn.model import Model\n")
    found = imports(bad, "pixdiff.config.bad", {"pixdiff.nn.model": bad})
    assert found == {"pixdiff.nn.model"}
    assert LAYER[unit("pixdiff.nn.model")] > LAYER[unit("pixdiff.config.bad")]


DOWNSTREAM = ("recipes", "plugins", "experiments")


def second_tier(module: str) -> bool:
    """The API downstream code may import: a top-level module or a subpackage, not their insides."""
    return module.count(".") == 1 and module.startswith("pixdiff.")


def downstream_imports() -> list[tuple[str, str, str]]:
    """(file, module, name) of every `from pixdiff... import name` in recipes/, plugins/, experiments/."""
    found = []
    for folder in DOWNSTREAM:
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pixdiff"):
                    found += [(f"{folder}/{path.name}", node.module, a.name) for a in node.names]
                elif isinstance(node, ast.Import):
                    found += [(f"{folder}/{path.name}", a.name, "") for a in node.names if a.name.startswith("pixdiff")]
    return found


def test_recipes_plugins_and_experiments_import_only_the_second_tier():
    import importlib

    bad = []
    for where, module, name in downstream_imports():
        if not second_tier(module):
            bad.append(f"{where}: from {module} import {name} (import it from {'.'.join(module.split('.')[:2])})")
            continue
        public = getattr(importlib.import_module(module), "__all__", None)
        is_submodule = (ROOT / module.replace(".", "/") / f"{name}.py").is_file()
        if name.startswith("_") or public is not None and name not in public and not is_submodule:
            bad.append(f"{where}: {module}.{name} is not in {module}.__all__")
    assert bad == []


def test_the_second_tier_check_sees_a_deep_import():
    assert not second_tier("pixdiff.nn.backbone") and second_tier("pixdiff.nn") and not second_tier("pixdiff")


def test_every_exported_name_resolves():
    import importlib

    packages = [m for m in source_modules() if m.startswith("pixdiff") and (ROOT / m.replace(".", "/")).is_dir()]
    missing = [f"{p}.{n}" for p in packages for n in getattr(importlib.import_module(p), "__all__", [])
               if not hasattr(importlib.import_module(p), n)]
    assert packages and missing == []


def test_no_exported_name_is_also_a_submodule():
    # `import pkg.name` sets the attribute `name` to the submodule, hiding an exported function of that name
    clash = [f"{m}.{n}" for m, path in source_modules().items() if path.name == "__init__.py"
             for n in _all_names(path) if (path.parent / f"{n}.py").is_file() or (path.parent / n).is_dir()]
    assert clash == []


def _all_names(init: Path) -> list[str]:
    import importlib

    return list(getattr(importlib.import_module(module_name(init)), "__all__", []))


def doc_layers(path: Path) -> list[list[str]]:
    """The layer table of a Markdown page: rows `| N | `unit`, ... | job |` -> units per layer."""
    rows: dict[int, list[str]] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            units = [u.strip("`").rstrip("/").removesuffix(".py").replace("/", ".") for u in cells[1].split(", ")]
            rows.setdefault(int(cells[0]), []).extend(units)
    return [rows[k] for k in sorted(rows)]


@pytest.mark.parametrize("page", ["README.md", "docs/architecture.md"])
def test_the_documented_layers_are_the_checked_ones(page):
    assert doc_layers(ROOT / page) == LAYERS
