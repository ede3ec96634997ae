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

# bottom to top; a unit is a subpackage, a top-level module or a folder of the repository
LAYERS = [
    ["pixdiff.config", "pixdiff.runtime"],
    ["pixdiff.nn", "pixdiff.diffusion", "pixdiff.data"],
    ["pixdiff.recipe", "pixdiff.eval", "pixdiff.testing"],
    ["pixdiff.checkpoints", "recipes", "plugins"],
    ["pixdiff.generate", "pixdiff.edit"],
    ["pixdiff.train"],
    ["pixdiff.pretrained"],
    ["pixdiff.bench", "experiments"],
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


def test_experiments_use_only_public_names():
    # experiments are downstream code: no underscore names, no module below pixdiff.train's package API
    bad = []
    for path in ROOT.glob("experiments/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pixdiff"):
                names = [a.name for a in node.names]
                if any(part.startswith("_") for part in node.module.split(".")) or \
                        any(n.startswith("_") for n in names) or node.module.startswith("pixdiff.train."):
                    bad.append(f"{path.name}: from {node.module} import {', '.join(names)}")
    assert bad == []
