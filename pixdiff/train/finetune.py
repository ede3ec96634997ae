"""Fine-tuning to new classes: start a run from a trained checkpoint's weights, with the label table
grown, shrunk or replaced to the new data's class count, and every other weight kept.

The label table has num_classes + 1 rows, the last one the null class. The new table takes the
source's null row as its null row (the unconditional embedding CFG needs is class-agnostic);
with keep_classes the classes both tables have keep their source rows (class k stays class k),
the others start from the new model's initialisation. A flow-matching run fine-tunes into a
MeanFlow recipe (`model.backbone.interval_embed`): the interval embedder is the one part that
starts fresh, at zero output. The optimizer starts fresh and every EMA
starts at the transferred weights; `--resume` continues a fine-tuning run from its own
checkpoints like any other run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pixdiff.checkpoints.interop import check_state
from pixdiff.checkpoints.loader import open_checkpoint, pick_weights
from pixdiff.train import parallel
from pixdiff.train.errors import TrainingError

LABEL_TABLE = "backbone.y_embedder.embedding_table.weight"
INTERVAL_EMBEDDER = "backbone.r_embedder."  # MeanFlow's second time input (DiTConfig.interval_embed)


def transfer(source: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], *, keep_classes: bool = True,
             what: str = "the source checkpoint") -> dict[str, torch.Tensor]:
    """`fresh` (the new model's state) with every tensor taken from `source` except the label
    table's class rows (see the module docstring), and the new model's interval embedder where the
    source has none (a flow-matching run fine-tuned into MeanFlow): its output layer is zero, so the
    new model starts as the source. Any other difference in keys or shapes is an error."""
    if LABEL_TABLE not in source or LABEL_TABLE not in fresh:
        raise TrainingError(f"{what} or the new model has no label table ({LABEL_TABLE})")
    source_has_interval = any(k.startswith(INTERVAL_EMBEDDER) for k in source)
    added = {} if source_has_interval else {k: v for k, v in fresh.items() if k.startswith(INTERVAL_EMBEDDER)}
    others = {k: v for k, v in fresh.items() if k != LABEL_TABLE and k not in added}
    check_state(others, {k: v for k, v in source.items() if k != LABEL_TABLE}, what)
    old, new = source[LABEL_TABLE], fresh[LABEL_TABLE].clone()  # (K_old + 1, D), (K_new + 1, D)
    if old.shape[1] != new.shape[1]:
        raise TrainingError(f"{what}'s label table is {tuple(old.shape)}, the new model's {tuple(new.shape)}")
    shared = min(old.shape[0], new.shape[0]) - 1 if keep_classes else 0
    new[:shared] = old[:shared]
    new[-1] = old[-1]
    return {**{k: source[k] for k in others}, **added, LABEL_TABLE: new}


def initialise(parts: parallel.Parts, path: str | Path, *, keep_classes: bool = True) -> None:
    """Load a pixdiff checkpoint's first EMA (or a run folder's newest one) into the model and
    all its EMAs, transferred by `transfer`."""
    ckpt, saved, file = open_checkpoint(path)
    source = pick_weights(ckpt, saved)
    if not isinstance(source, dict):
        raise TrainingError(f"{file} holds no EMA weights to fine-tune from")
    net = parallel.full_state_dict(parts.net, parts.fsdp)  # model.* and (with REPA) a fresh projector
    fresh = {k.removeprefix("model."): v for k, v in net.items() if k.startswith("model.")}
    state = transfer(source, fresh, keep_classes=keep_classes, what=f"{file}'s weights")
    parallel.load_full_state_dict(parts.net, {**net, **{f"model.{k}": v for k, v in state.items()}}, parts.fsdp)
    for i in range(len(parts.emas)):
        parallel.load_ema_state(parts, i, state)
