"""DiP-XL/32 at 512 px (paper Table 3): 32x32 patches keep 256 tokens; the U-Net head's
bottleneck is 2x2 and s_i is tiled over it. Training settings as DiP-XL/16."""

from pixdiff.config import replace
from pixdiff.recipe import Recipe, load_recipe


def build() -> Recipe:
    return replace(
        load_recipe("dip_xl16"),
        name="dip_xl32",
        **{"model.backbone.patch_size": 32, "model.backbone.image_size": 512},
    )
