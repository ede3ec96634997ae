"""`pixdiff data prepare | export`: the preprocessed training-data cache, and reference batches from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from pixdiff.commands.options import BIG, CacheDirOpt, QuietOpt, not_empty, reported


def prepare(
    source: Annotated[str, typer.Argument(
        help="Built in: 'emoji' (Twemoji), 'emoji:picked' (9 look-alike classes), 'openmoji' (OpenMoji SVGs by "
             "Unicode group) or 'openmoji:subgroup'; "
             "or an image folder with one sub-folder per class.", callback=not_empty)],
    resolution: Annotated[int, typer.Option(help="Image size in pixels (square).", min=1, max=65536)],
    cache_dir: CacheDirOpt = None,
    on_error: Annotated[Literal["skip", "stop"], typer.Option(
        help="Unreadable files: 'skip' (and list them) or 'stop'.")] = "skip",
    small: Annotated[Literal["upscale", "reject"], typer.Option(
        help="Images smaller than the resolution: 'upscale' or 'reject'.")] = "upscale",
    rebuild: Annotated[bool, typer.Option(help="Rebuild even if a cache exists.")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Decoding threads (default: one per CPU core).", min=1,
                                                   max=1024)] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images of each class.", min=1,
                                                 max=10_000_000)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Decode images once into a memory-mapped uint8 cache (training never decodes JPEGs)."""
    from pixdiff.data import prepare
    from pixdiff.runtime.progress import progress

    # ValueError: a bad resolution, limit or policy; progress shows only if the cache is built
    with reported(ValueError), progress("data prepare", enabled=not quiet) as on_progress:
        cache = prepare(source, cache_dir, resolution, on_error=on_error, small=small, rebuild=rebuild,
                        workers=workers, limit=limit, on_progress=on_progress)
    typer.echo(cache.info.summary())


def export(
    source: Annotated[str, typer.Argument(help="'emoji', 'openmoji' (built in) or an image folder with one "
                                               "sub-folder per class.", callback=not_empty)],
    out: Annotated[Path, typer.Argument(help="Output .npz in the ADM-evaluator layout (arr_0 uint8 NHWC, labels).")],
    resolution: Annotated[int, typer.Option(help="Image size in pixels (square), as in training.", min=1,
                                            max=65536)],
    part: Annotated[Optional[str], typer.Option(
        callback=not_empty,
        help="Keep part K of M ('K/M'): cache indices i with i % M == K; parts are disjoint.")] = None,
    per_class: Annotated[Optional[int], typer.Option(help="Use only the first N images of each class.", min=1,
                                                     max=BIG)] = None,
    cache_dir: CacheDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write training data, decoded exactly as training decodes it, as a reference batch for `pixdiff eval`."""
    from pixdiff.data.reference import export, parse_part
    from pixdiff.runtime.progress import progress

    with reported(ValueError), progress("data export", enabled=not quiet) as on_progress:
        path = export(source, out, resolution, cache_dir=cache_dir, part=parse_part(part), per_class=per_class,
                      on_progress=on_progress)
    typer.echo(f"wrote {path}")
