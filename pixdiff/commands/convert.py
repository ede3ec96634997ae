"""`pixdiff convert`: the authors' checkpoints <-> pixdiff checkpoints, strictly, or a pixdiff
checkpoint exported as safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from pixdiff.commands.options import LayoutOpt, SetOpt, fail, load, not_empty, reported


def convert(
    src: Annotated[str, typer.Argument(callback=not_empty, help=(
        "Checkpoint (or, to export, a run folder) to convert, or hf-hub:ORG/REPO[@REVISION][:FILE]."))],
    dst: Annotated[Path, typer.Argument(help="Output file.")],
    recipe: Annotated[str, typer.Option(help="--to pixdiff from the authors' layout: the recipe whose model the "
                                             "weights belong to (a pixdiff source keeps its own).",
                                        callback=not_empty)] = "dip_xl16",
    set_: SetOpt = None,
    to: Annotated[Optional[Literal["pixdiff", "reference", "safetensors"]], typer.Option(
        help="'pixdiff' (from the authors' layout), 'reference' (back to it, in --layout, default 'dip') or 'safetensors' (a pixdiff "
             "checkpoint's EMA weights and recipe); default: 'safetensors' for a .safetensors output, "
             "else 'pixdiff'.")] = None,
    weights: Annotated[Literal["ema", "raw"], typer.Option(
        help="--to pixdiff: sample with the file's 'ema' (default) or 'raw' weights. (A JiT checkpoint's "
             "model, model_ema1 and model_ema2 map to model, ema and ema_extra.)")] = "ema",
    layout: LayoutOpt = None,
) -> None:
    """Convert between the authors' reference checkpoints and pixdiff checkpoints, strictly, or export
    a pixdiff checkpoint as safetensors (which `pixdiff sample` reads)."""
    import torch

    from pixdiff.checkpoints import store
    from pixdiff.checkpoints.layouts import DEFAULT, LAYOUTS
    from pixdiff.checkpoints.loader import load_model, open_checkpoint
    from pixdiff.runtime.atomic import atomic_write

    to = to or ("safetensors" if dst.suffix == ".safetensors" else "pixdiff")
    if to == "safetensors" and weights != "ema":
        fail("--to safetensors exports the EMA weights only (--weights ema)")
    with reported():  # everything is checked strictly before anything is written
        if to == "pixdiff":
            ckpt, _, _ = open_checkpoint(src, recipe=load(recipe, set_), layout=layout)
            if weights == "raw":
                ckpt = {**ckpt, "ema": ckpt.get("model"), "ema_extra": {}}
            store.save(ckpt, dst)
        elif to == "reference":
            ckpt, saved, _ = open_checkpoint(src)
            state = LAYOUTS[layout or DEFAULT].to_official(ckpt, saved)
            with atomic_write(dst) as f:
                torch.save(state, f)
        else:
            model, r, _ = load_model(src, overrides=set_ or [])
            store.save_safetensors(model.state_dict(), r, dst)
    typer.echo(f"wrote {dst}")
