"""Layer 4, weights on disk: pixdiff's own checkpoints (`store`) and converters from the official
layouts (`dip`: the DiP authors' state dict; `jit`: LTH14/JiT's)."""
