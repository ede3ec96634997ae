"""Layer 2, the math: objectives (`objectives`: DDPM, flow matching, x-prediction; velocity is the
common currency), pure solvers over an explicit time grid (`solvers`), classifier-free guidance
(`guidance`) and noise -> images (`sampling`). Knows nothing of recipes."""
