"""`pixdiff eval` (sample-set metrics against a reference), `pixdiff eval-sanity` (the pixel
metrics' sanity rows on real data) and `pixdiff eval-readout` (a run's one-step denoising error per
frequency band, `pixdiff.eval.readout`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from pixdiff.commands.options import (
    BIG,
    SEED_MAX,
    CacheDirOpt,
    DeviceOpt,
    JsonOpt,
    QuietOpt,
    SourceArg,
    fail,
    finite,
    not_empty,
    reported,
)
from pixdiff.runtime.progress import OnProgress  # torch-free


def evaluate(
    samples: Annotated[Path, typer.Argument(help="Samples: an .npz (arr_0 uint8 NHWC) or an image folder.")],
    ref: Annotated[str, typer.Option(
        callback=not_empty,
        help="Reference: an .npz, an image folder, a cached statistics file, an ADM evaluator reference batch "
             "(VIRTUAL_imagenet256_labeled.npz: its mu/sigma, mu_s/sigma_s with Inception features), or "
             "training data decoded as training decodes it, at the samples' resolution: 'emoji' (built in) or "
             "'data:FOLDER'.")],
    features: Annotated[str, typer.Option(callback=not_empty, help=(
        "'effnet' (offline default, reported as FD-EffNet), 'inception:PATH' to the FID Inception state dict "
        "pt_inception-2015-12-05-6726825d.pth (FID, sFID, IS; sha256 checked) or a TorchScript "
        "inception-2015-12-05.pt, or 'inception' for the weights --download-weights fetched."))] = "effnet",
    download_weights: Annotated[bool, typer.Option(
        "--download-weights", help="Fetch the FID Inception weights (pytorch-fid's release) into pixdiff's cache "
                                   "once, sha256 verified, and score with them ('--features inception').")] = False,
    unverified_weights: Annotated[bool, typer.Option(
        "--unverified-weights", help="Accept an Inception state dict other than the published file (its own "
                                     "sha256 is recorded; its scores are not comparable with published FID).")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Feature-extraction batch size.", min=1, max=BIG)] = 64,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """FID-style Frechet distance, sFID, KID, IS and precision/recall of a sample set against a reference."""
    import warnings

    from pixdiff.eval.metrics import SampleSizeWarning

    if download_weights and features not in ("effnet", "inception"):
        fail(f"--download-weights fetches the weights '--features inception' reads; it does not go with "
             f"--features {features}")
    with reported(FileNotFoundError, ValueError), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SampleSizeWarning)
        if download_weights:
            features = fetch_weights(shown=not quiet)
        result = score(samples, ref, features, check_hash=not unverified_weights, batch_size=batch_size,
                       cache_dir=cache_dir, device=device, shown=not quiet)
    for w in caught:
        if issubclass(w.category, SampleSizeWarning):
            typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for k, v in result.items():
        if isinstance(v, dict):  # the protocol record
            v = json.dumps(v)
        typer.echo(f"{k:>24}: {v:.4f}" if isinstance(v, float) else f"{k:>24}: {v}")


def fetch_weights(shown: bool) -> str:
    """Download (once) the FID Inception weights into pixdiff's cache; the feature spec that reads them."""
    from pixdiff.eval.inception import cached_weights_path, download_weights
    from pixdiff.runtime.paths import cache_home

    if shown and not cached_weights_path(cache_home()).is_file():
        typer.echo(f"downloading the FID Inception weights into {cached_weights_path(cache_home())}", err=True)
    download_weights(cache_home())
    return "inception"


def score(samples: Path, ref: str, features: str, *, check_hash: bool = True, batch_size: int, cache_dir: Path | None, device: str | None,
          shown: bool) -> dict:
    """`eval.metrics.evaluate` in its three long steps, each with its own progress on stderr when
    `shown`: decoding training data into a reference (when not cached), the reference's features
    (when not cached), the samples' features."""
    from pixdiff.eval.features import load_extractor
    from pixdiff.eval.metrics import check_reference_resolution, evaluate, reference_stats
    from pixdiff.runtime.distributed import pick_device
    from pixdiff.runtime.progress import progress

    dev, extractor = str(pick_device(device)), load_extractor(features, check_hash=check_hash)
    check_reference_resolution(samples, ref)
    with progress("eval data", enabled=shown) as on_progress:
        reference = resolve_reference(ref, samples, cache_dir, on_progress)
    with progress("eval reference", enabled=shown) as on_progress:
        stats = reference_stats(reference, extractor, batch_size=batch_size, device=dev, on_progress=on_progress)
    with progress("eval samples", enabled=shown) as on_progress:
        return evaluate(samples, stats, features=extractor, batch_size=batch_size, device=dev,
                        on_progress=on_progress, reference_source=reference)


def resolve_reference(ref: str, samples: Path, cache_dir: Path | None, on_progress: OnProgress | None) -> Path:
    """A reference spec -> a file or folder `evaluate` reads (`data.reference.reference_source`), training
    data at the samples' resolution."""
    from pixdiff.data.reference import names_training_data, reference_source

    if not names_training_data(ref):
        return Path(ref)
    from pixdiff.data.npz import open_images

    height, width, _ = open_images(samples).shape
    if height != width:
        raise ValueError(f"{samples}: samples are {height}x{width}; training data are square")
    return reference_source(ref, height, cache_dir=cache_dir, on_progress=on_progress)


def sanity(
    data: Annotated[str, typer.Argument(help="Training data, as for `data prepare`: 'openmoji', 'emoji', a folder.",
                                        callback=not_empty)],
    resolution: Annotated[int, typer.Option(help="Image size in pixels (square), as in training.", min=1, max=65536)],
    n: Annotated[int, typer.Option("--n", help="Images per side: two disjoint random sets of N per split.",
                                   min=2, max=10_000_000)],
    patch: Annotated[int, typer.Option(help="Patch size P for the in-patch detail ratio and the seam score.",
                                       min=1, max=65536)] = 8,
    repeats: Annotated[int, typer.Option(help="Random splits; rows show mean [min, max] over them.",
                                         min=1, max=1000)] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the splits and the noise.", min=0, max=SEED_MAX)] = 0,
    blur: Annotated[float, typer.Option(help="Gaussian blur sigma in pixels.", min=0.0, max=1e3,
                                        callback=finite)] = 1.0,
    noise: Annotated[float, typer.Option(help="Gaussian noise std, as a fraction of the 0..255 range.", min=0.0,
                                         max=1e3, callback=finite)] = 0.1,
    seams: Annotated[float, typer.Option(help="Per-patch offset std, as a fraction of the range.", min=0.0, max=1e3,
                                         callback=finite)] = 0.05,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images of each class.", min=1,
                                                 max=10_000_000)] = None,
    effnet: Annotated[bool, typer.Option(help="Also the EfficientNet-lite0 KID and precision/recall rows "
                                                "(images resized to 224 px: slow on a CPU).")] = True,
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sanity rows of the metrics: data vs data (halves, class-balanced), vs blurred, noised and seamed data."""
    from pixdiff.data import prepare
    from pixdiff.eval.sanity import METRICS, PIXEL_METRICS, Degradations, format_table, run_sanity

    with reported(ValueError):
        degradations = Degradations(blur, noise, seams)
        cache = prepare(data, cache_dir, resolution, limit=limit)
        images = cache.images.numpy().transpose(0, 2, 3, 1)  # (M, H, W, 3)
        results = run_sanity(images, cache.labels.numpy(), n, patch, repeats=repeats, seed=seed,
                             degradations=degradations, metrics=METRICS if effnet else PIXEL_METRICS)
    if as_json:
        typer.echo(json.dumps([{"metric": r.metric, "better": r.better, "scores": r.scores, "detects":
                                [row for row in r.scores if row != "halves" and r.detects(row)], "passes": r.passes}
                               for r in results], indent=2))
        return
    typer.echo(f"{cache.info.source}, {resolution} px, N = {n} per side, P = {patch}, {repeats} splits; chance of "
               f"the balanced layout accuracy 1/{cache.info.num_classes} = {1 / cache.info.num_classes:.3f}")
    typer.echo(format_table(results))


def noise_levels(values: list[float] | None) -> list[float] | None:
    if values is not None and not all(0 < v < 1 for v in values):
        raise typer.BadParameter(f"noise levels must lie in (0, 1) (0 = data, 1 = noise), got {values}")
    return values


def readout(
    source: SourceArg,
    data: Annotated[str, typer.Option(callback=not_empty, help=(
        "Held-out images, as for `data prepare` ('openmoji', 'emoji', a folder), decoded at the run's "
        "resolution: pass images the run did not train on."))],
    out: Annotated[Path, typer.Option(help="JSON file for the rows (written atomically).")],
    n: Annotated[int, typer.Option("--n", help="Images: a seeded random choice of N from --data.", min=1,
                                   max=BIG)] = 256,
    t: Annotated[Optional[list[float]], typer.Option(
        "--t", help="Noise level, 0 = data, 1 = noise (repeatable; default 0.2 0.4 0.6 0.8 0.95).",
        callback=noise_levels)] = None,
    labels: Annotated[Literal["class", "null"], typer.Option(
        help="Call the model with the images' class labels or with the null class (no guidance either way).")
    ] = "class",
    seed: Annotated[int, typer.Option(help="Seed of the image choice and of image i's fixed noise.", min=0,
                                      max=SEED_MAX)] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per forward batch (does not change the numbers).",
                                            min=1, max=BIG)] = 64,
    weights: Annotated[Literal["ema", "raw"], typer.Option(help="'ema' (default) or 'raw' weights.")] = "ema",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images of each class.", min=1,
                                                 max=10_000_000)] = None,
    held_out: Annotated[bool, typer.Option("--held-out", help=(
        "Choose only among the images the run never trained on (its data.holdout); --data must be its source."))
    ] = False,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Denoising readout: PSNR of the one-step x0 estimate in the patch-mean and in-patch bands, per noise level."""
    from pixdiff.runtime import atomic_write

    if out.is_dir():
        fail(f"--out {out} is a folder; name a JSON file")
    with reported(ValueError):
        rows, meta = run_readout(source, data, n, tuple(t or ()), labels, seed, batch_size, weights, limit,
                                 cache_dir, device, held_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out, text=True) as f:
            f.write(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps({**meta, "rows": rows}, indent=2))
        return
    typer.echo(f"{meta['checkpoint']}: {meta['n']} images of {data}, P = {meta['patch']}, labels {labels}")
    typer.echo(f"{'t (noise)':>10} {'PSNR low':>9} {'PSNR high':>10} {'PSNR':>7}")
    for r in rows:
        typer.echo(f"{r['t']:>10.2f} {r['psnr_low']:>9.2f} {r['psnr_high']:>10.2f} {r['psnr']:>7.2f}")
    typer.echo(f"wrote {out}")


def run_readout(source: Path, data: str, n: int, times: tuple[float, ...], labels: str, seed: int, batch_size: int,
                weights: str, limit: int | None, cache_dir: Path | None, device: str | None,
                held_out: bool = False) -> tuple[list, dict]:
    """Load the run, decode --data at its resolution, pick N images (among its held-out ones with
    `held_out`), and read out (`eval.readout`)."""
    import numpy as np
    import torch

    from pixdiff.data import prepare
    from pixdiff.data.stream import held_out as held_out_mask
    from pixdiff.eval.readout import READOUT_TIMES, denoising_readout
    from pixdiff.pipelines import load
    from pixdiff.runtime.distributed import pick_device

    run = load(source, weights=weights, device=pick_device(device))
    b = run.recipe.model.backbone
    dc = run.recipe.data
    if held_out and (dc.holdout < 2 or data != dc.source or limit is not None):
        raise ValueError(f"--held-out needs a run trained with data.holdout >= 2 (this one: {dc.holdout}) and "
                         f"--data {dc.source} (its source) without --limit")
    cache = prepare(data, cache_dir, b.image_size, limit=limit)
    pool = held_out_mask(len(cache.images), dc.holdout).nonzero().flatten().numpy() if held_out else \
        np.arange(len(cache.images))
    if n > len(pool):
        raise ValueError(f"--n {n} is more than the {len(pool)} {'held-out ' if held_out else ''}images of {data}")
    pick = np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))
    y = cache.labels[pick].long()
    if labels == "class" and int(y.max()) >= max(b.num_classes, 1):
        raise ValueError(f"{data} has class {int(y.max())} but the model knows {b.num_classes}: pass --labels null")
    dev = next(run.model.parameters()).device
    x0 = cache.images[pick].to(dev).float() / 127.5 - 1  # (N, C, H, W) in [-1, 1]
    rows = denoising_readout(run.model, run.objective, x0, y.to(dev), b.patch_size, times=times or READOUT_TIMES,
                        seed=seed, num_classes=b.num_classes, use_labels=labels, batch_size=batch_size)
    meta = {"checkpoint": str(run.checkpoint), "weights": weights, "data": data, "held_out": held_out, "n": n,
            "seed": seed,
            "labels": labels, "patch": b.patch_size, "objective": type(run.objective).__name__,
            "time": "t is the noise level (0 = data); the model was called at pixdiff time 1 - t",
            "device": str(dev), "torch": torch.__version__}
    return rows, meta
