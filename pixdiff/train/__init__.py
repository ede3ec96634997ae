"""The training engine: a recipe in, a trained and resumable run folder out.

One code path for a CPU, one GPU, or many GPUs under `torchrun` (DDP, or FSDP2 when the recipe
asks for it). Determinism is by construction, not by luck: the data order is a function of
(seed, epoch), and every sample's diffusion noise, time and label dropout come from its own
generator seeded by (seed, step, global sample index). A run therefore does not depend on the
number of processes, and a resumed run repeats the uninterrupted one step for step.

Modules: `loop` (the Trainer), `parallel` (building and DDP/FSDP2), `checkpointing`, `metrics` (rows,
TensorBoard, progress), `schedule` (learning rates), `ema`, `loss`; micro-batches come from
`pixdiff.data.stream` (epoch orders computed once, gathered ahead in worker threads); `resume`
(the recipe a resume continues with), `scores` (FD/KID every train.eval_every steps), `signals` (stopping with a checkpoint on SIGINT/SIGTERM/SIGUSR1).

Run folder (one writer at a time: `train` holds an OS lock on it, see `pixdiff.runtime.lock`):
    .lock                the lock, with the holder's pid (removed when the run ends)
    recipe.json          the resolved recipe (a resume starts from it: see `pixdiff.train.resume`)
    recipe_history.jsonl one row per resume that changed the recipe: its step, time and changes
    metrics.jsonl        one JSON row per logged step: window means since the previous row (rank 0),
                         with eval/fd and eval/kid at the train.eval_every steps
    tensorboard/         the same scalars as TensorBoard events (with train.tensorboard=true)
    checkpoints/         step_XXXXXXXX.pt, written atomically with a digest; the newest two are kept
    samples/             EMA sample grids, step_XXXXXXXX.png
    loss.png             loss curve, written at the end
"""

from pixdiff.data.stream import class_groups, epoch_order, flips, global_batch_indices, held_out
from pixdiff.train.errors import TrainingError
from pixdiff.train.loop import Callback, Event, Trainer, TrainResult, train
from pixdiff.train.loss import TrainingLoss, step_generators

__all__ = ["Callback", "Event", "TrainResult", "Trainer", "TrainingError", "TrainingLoss", "class_groups", "epoch_order", "flips",
           "global_batch_indices", "held_out", "step_generators", "train"]
