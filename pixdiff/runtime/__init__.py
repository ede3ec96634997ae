"""What every layer uses to run: atomic writes (`atomic`), torch.distributed setup and the device
(`distributed`), one writer per output folder (`lock`), dtypes and autocast (`precision`),
per-sample generators and derived seeds (`rng`). Imports nothing else of pixdiff."""

from pixdiff.runtime.atomic import atomic_write  # torch-free, like this package's import

__all__ = ["atomic_write"]
