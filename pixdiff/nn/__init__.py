"""The networks: patchify (`patches`), the DiT backbone (`backbone`), local heads (`heads/`), the
assembled denoiser (`model`) and its parameter/FLOP summary (`summary`). Recipes and plugins import
the configs below from here."""

from pixdiff.config.exports import exports, lazy_exports

_EXPORTS = {
    **exports("pixdiff.nn.backbone", "DiTConfig"),
    **exports("pixdiff.nn.model", "ModelConfig"),
    **exports("pixdiff.nn.heads", "HeadConfig", "Reads", "Scope"),
    **exports("pixdiff.nn.heads.unet", "ConvUNet"),
    **exports("pixdiff.nn.heads.final_layer", "DiTFinalLayer"),
    **exports("pixdiff.nn.heads.coord_mlp", "CoordinateMLP"),
    **exports("pixdiff.nn.heads.intra_attention", "IntraPatchAttention"),
    **exports("pixdiff.nn.heads.mlp", "StandardMLP"),
    **exports("pixdiff.nn.heads.pixel_decoder", "AdaLNPixelDecoder"),
    **exports("pixdiff.nn.heads.pixel_dit", "PixelDiTHead"),
    **exports("pixdiff.nn.summary", "count_params", "model_summary"),
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
