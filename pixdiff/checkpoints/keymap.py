"""Official state dicts <-> pixdiff's, as lists of rules: which tensors map to which, and how.

Every official-layout converter (`jit`, `pixnerd`, `deco`) is a `rules(...)` list over this one
engine, strict both ways: every tensor used, none missing, one InteropError naming what is off."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pixdiff.checkpoints.interop import InteropError

if TYPE_CHECKING:
    from pixdiff.recipe import Recipe


def _same(*tensors: Tensor) -> tuple[Tensor, ...]:
    return tensors


@dataclass(frozen=True)
class Rule:
    """Tensors `ours` (pixdiff names) <-> `theirs` (official names) and the maps between them."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    to_ours: Callable[..., tuple[Tensor, ...]] = _same
    to_theirs: Callable[..., tuple[Tensor, ...]] = _same


def renamed(ours: str, theirs: str, params: tuple[str, ...] = ("weight", "bias")) -> list[Rule]:
    return [Rule((f"{ours}.{p}",), (f"{theirs}.{p}",)) for p in params]


def convert(state: Mapping[str, Tensor], rule_list: list[Rule], *, forward: bool, what: str) -> dict[str, Tensor]:
    """Apply every rule in one direction; one InteropError lists whatever is missing or left over."""
    out: dict[str, Tensor] = {}
    missing: list[str] = []
    for rule in rule_list:
        src, dst, fn = (rule.theirs, rule.ours, rule.to_ours) if forward else (rule.ours, rule.theirs, rule.to_theirs)
        if any(k not in state for k in src):
            missing += [k for k in src if k not in state]
            continue
        try:
            out.update(zip(dst, fn(*(state[k] for k in src))))
        except (RuntimeError, IndexError) as e:
            shapes = ", ".join(f"{k} {tuple(state[k].shape)}" for k in src)
            raise InteropError(f"{what}: cannot convert {shapes}: {e}") from None
    used = {k for rule in rule_list for k in (rule.theirs if forward else rule.ours)}
    unused = sorted(set(state) - used)
    if missing or unused:
        raise InteropError(f"{what} does not match the recipe's model; " + "; ".join(
            f"{label}: {keys[:8]}{' ...' if len(keys) > 8 else ''}"
            for label, keys in (("missing", missing), ("unused", unused)) if keys))
    return out


def own_shapes(recipe: Recipe) -> dict[str, Tensor]:
    """The state dict of the recipe's model, shapes only (built on the meta device)."""
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        return recipe.model.build().state_dict()
