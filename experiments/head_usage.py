"""How much DiP's trained head uses the backbone: docs/experiments/head_usage.json, read by the page.

    python -m experiments.head_usage [--work runs/experiments]

For every finished arm of the fair study and the diagnosis (its last checkpoint, EMA weights),
on 8 fixed noise images: the rms of s_i (what the head's bottleneck reads from the backbone), the
fraction of the bottleneck's units whose s_i part of the pre-activation is below -4 (SiLU's flat
tail, where neither the output nor the gradient follows s_i), and how far the output moves when only
t changes (0.3 -> 0.7) or only the class does (0 -> 5): a head that ignores the backbone moves by
~0 on both, since the head itself sees neither t nor the class. DiT-only's shifts are the reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.scaffold import DEFAULT_WORK, DOCS, command_line, environment, finished, loaded, write_json
from experiments.studies import best_lrs, diagnosis_arms, fair_arms

SATURATED = -4.0  # SiLU'(-4) = -0.05 and SiLU(-4) = -0.07: past this the unit barely follows its input


def usage(model: torch.nn.Module, image: int) -> dict[str, float]:
    x = torch.randn(8, 3, image, image, generator=torch.Generator().manual_seed(0))
    y0, y5 = torch.zeros(8, dtype=torch.long), torch.full((8,), 5, dtype=torch.long)
    t3, t7 = torch.full((8,), 0.3), torch.full((8,), 0.7)
    with torch.no_grad():
        out = model(x, t3, y0)
        shifts = {"out_shift_t": float((out - model(x, t7, y0)).square().mean().sqrt()),
                  "out_shift_class": float((out - model(x, t3, y5)).square().mean().sqrt()),
                  "out_rms": float(out.square().mean().sqrt())}
        if not hasattr(model.head, "bottleneck"):  # DiT-only: the reference for the shifts
            return shifts
        s = model.features(x, t3, y0).s  # (B, N, D)
        conv = model.head.bottleneck[0]
        enc = conv.weight.shape[1] - s.shape[-1]  # the encoder's channels come first in the concat
        pre = F.linear(s, conv.weight[:, enc:, 0, 0], conv.bias)  # (B, N, width): s_i's part of each unit
        return {"s_rms": float(s.square().mean().sqrt()), "saturated": float((pre < SATURATED).float().mean()), **shifts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--out", type=Path, default=DOCS / "experiments" / "head_usage.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    best = best_lrs(finished(fair_arms(a.scale), a.work), a.scale)
    arms = fair_arms(a.scale, best) + diagnosis_arms(a.scale, best)
    rows = []
    for arm in arms:
        if not (a.work / arm.name / "result.json").exists():
            continue
        run = loaded(a.work / arm.name)
        rows.append({"arm": arm.name, "label": arm.label, "lr": arm.recipe.train.lr, "seed": arm.seed,
                     **usage(run.model.cpu().eval(), arm.recipe.model.backbone.image_size)})
        print(rows[-1], flush=True)
    write_json(a.out, {"command": command_line(), "environment": environment(), "saturated_below": SATURATED,
                       "rows": rows})


if __name__ == "__main__":
    main()
