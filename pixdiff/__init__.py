"""pixdiff: a modular toolkit for pixel-space diffusion models (DiP, its ablations, JiT).

The public names below load lazily (module `__getattr__`), so `import pixdiff` and `pixdiff --help`
stay torch-free and instant:

    recipe = pixdiff.load_recipe("emoji_tiny", ["train.max_steps=200"])
    pixdiff.Trainer(recipe, "runs/x").fit()
    run = pixdiff.load("runs/x")
    pixdiff.save_grid(run.sample(range(9), seed=0), "grid.png")

Layers, bottom to top (each imports only from below): `config`, `runtime` < `nn`, `diffusion`,
`data` < `recipe`, `eval`, `testing` < `checkpoints` < `generate` < `train` < `pretrained` < `bench`,
`cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_recipe": "pixdiff.recipe",
    "Recipe": "pixdiff.recipe",
    "replace": "pixdiff.recipe",
    "with_sampler": "pixdiff.recipe",
    "load": "pixdiff.pretrained",
    "sample": "pixdiff.pretrained",
    "Pretrained": "pixdiff.pretrained",
    "Trainer": "pixdiff.train",
    "save_grid": "pixdiff.data.grid",
    "FlowMatching": "pixdiff.diffusion.objectives",
    "DDPM": "pixdiff.diffusion.objectives",
    "XPrediction": "pixdiff.diffusion.objectives",
    "SOLVERS": "pixdiff.diffusion.solvers",
    "euler": "pixdiff.diffusion.solvers",
    "heun": "pixdiff.diffusion.solvers",
    "ddim": "pixdiff.diffusion.solvers",
    "ddpm_ancestral": "pixdiff.diffusion.solvers",
    "euler_maruyama": "pixdiff.diffusion.solvers",
    "odeint": "pixdiff.diffusion.solvers",
    "cfg": "pixdiff.diffusion.guidance",
    "seed_generators": "pixdiff.runtime.rng",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time the names load on first use
    from pixdiff.data.grid import save_grid
    from pixdiff.diffusion.guidance import cfg
    from pixdiff.diffusion.objectives import DDPM, FlowMatching, XPrediction
    from pixdiff.diffusion.solvers import SOLVERS, ddim, ddpm_ancestral, euler, euler_maruyama, heun, odeint
    from pixdiff.pretrained import Pretrained, load, sample
    from pixdiff.recipe import Recipe, load_recipe, replace, with_sampler
    from pixdiff.runtime.rng import seed_generators
    from pixdiff.train import Trainer


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pixdiff' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
