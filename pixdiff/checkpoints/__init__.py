"""Layer 4, weights on disk: pixdiff's own checkpoints (`store`) and converters from the official
layouts (`dip`: the DiP authors' state dict; `jit`: LTH14/JiT's; `pixeldit`, `pixnerd`, `deco`: the
Lightning checkpoints of those papers' code), the rule-based ones over one engine (`keymap`)."""
