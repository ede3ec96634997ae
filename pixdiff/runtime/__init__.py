"""Layer 1, what every layer uses to run: atomic writes (`atomic`), torch.distributed setup
(`distributed`), one writer per output folder (`lock`), dtypes and autocast (`precision`),
per-sample generators and derived seeds (`rng`). Imports nothing else of pixdiff."""
