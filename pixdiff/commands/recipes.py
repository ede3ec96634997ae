"""`pixdiff info` and `pixdiff ls`: what a recipe builds, and which recipes and plugins there are."""

from __future__ import annotations

import json

import typer

from pixdiff.commands.options import JsonOpt, RecipeArg, SetOpt, load, reported


def info(recipe: RecipeArg, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Parameters, head size, tokens and GFLOPs per forward (batch 1) of a recipe's model.

    The model is built on the meta device: instant and memory-free even at 1.1B parameters."""
    with reported():
        from pixdiff.nn.summary import model_summary

        r = load(recipe, set_)
        summary = {"recipe": r.name, **model_summary(r.model)}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{recipe} ({summary['recipe']})", show_header=False)
    rows = [
        ("parameters", f"{summary['params']:,}"), ("  backbone", f"{summary['params_backbone']:,}"),
        ("  head", f"{summary['params_head']:,} ({summary['head']}, {summary['placement']})"),
        ("resolution", f"{summary['resolution']} px"), ("patch size", str(summary["patch_size"])),
        ("tokens", str(summary["tokens"])), ("depth x width", f"{summary['depth']} x {summary['dim']}"),
        ("GFLOPs / forward (batch 1)", f"{summary['gflops']:.1f}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


def list_recipes() -> None:
    """List the built-in recipes (with their functions) and discovered plugins."""
    from pixdiff.config.plugins import discover
    from pixdiff.recipe import builtin_recipes, load_recipe_module, recipe_functions

    with reported():
        for path in builtin_recipes():
            fns = recipe_functions(load_recipe_module(path))
            typer.echo(f"{path.stem}: {', '.join(fns)}")
        plugins = discover()
    for kind, table in (("HEADS", plugins.heads), ("RECIPES", plugins.recipes)):
        for name in sorted(table):
            typer.echo(f"plugin {kind.lower()[:-1]} {name}  ({plugins.sources[f'{kind}:{name}']})")
