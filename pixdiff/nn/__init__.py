"""Layer 2, the networks: patchify (`patches`), the DiT backbone (`backbone`), local heads
(`heads/`), the assembled denoiser (`model`) and its parameter/FLOP summary (`summary`)."""
