"""pixdiff: a modular toolkit for pixel-space diffusion models (DiP and its ablations).

The package root stays import-light (no torch) so that `pixdiff --help` is instant;
import the components from their modules: `pixdiff.nn.model`, `pixdiff.diffusion.objectives`, ...
"""

__version__ = "0.1.0"
