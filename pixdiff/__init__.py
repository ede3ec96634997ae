"""pixdiff: a modular PyTorch toolkit for pixel-space diffusion.

The public names below load lazily (module `__getattr__`), so `import pixdiff` and `pixdiff --help`
stay torch-free and instant:

    recipe = pixdiff.load_recipe("emoji_tiny", ["train.max_steps=200"])
    pixdiff.Trainer(recipe, "runs/x").fit()
    run = pixdiff.load("runs/x")
    pixdiff.save_grid(run.sample(range(9), seed=0), "grid.png")

Each subpackage exports the names recipes, plugins and experiments use (`pixdiff.nn`,
`pixdiff.diffusion`, ...); the layers are mapped in docs/architecture.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixdiff.about import DESCRIPTION
from pixdiff.config.exports import exports, lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    **exports("pixdiff.recipe", "load_recipe", "Recipe", "with_sampler"),
    **exports("pixdiff.config.tree", "replace"),
    **exports("pixdiff.pipelines.pretrained", "load", "Pretrained"),
    **exports("pixdiff.train", "Trainer"),
    **exports("pixdiff.data.grid", "save_grid"),
    **exports("pixdiff.diffusion.objectives", "FlowMatching", "DDPM", "XPrediction"),
    **exports("pixdiff.diffusion.solvers", "SOLVERS", "euler", "heun", "ab2", "ddim", "ddpm_ancestral",
              "euler_maruyama", "odeint"),
    **exports("pixdiff.diffusion.guidance", "cfg"),
    **exports("pixdiff.runtime.rng", "seed_generators"),
}
__all__ = ["__version__", "DESCRIPTION", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time the names load on first use
    from pixdiff.config.tree import replace
    from pixdiff.data.grid import save_grid
    from pixdiff.diffusion.guidance import cfg
    from pixdiff.diffusion.objectives import DDPM, FlowMatching, XPrediction
    from pixdiff.diffusion.solvers import SOLVERS, ab2, ddim, ddpm_ancestral, euler, euler_maruyama, heun, odeint
    from pixdiff.pipelines.pretrained import Pretrained, load
    from pixdiff.recipe import Recipe, load_recipe, with_sampler
    from pixdiff.runtime.rng import seed_generators
    from pixdiff.train import Trainer
