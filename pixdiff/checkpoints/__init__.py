"""Weights on disk: pixdiff's own checkpoints (`store`), the one loader that turns any source into a
model (`loader`; Hugging Face Hub sources in `hub`, their conversions kept by `converted`), and the official layouts (`layouts`: one table over the converters `dip`, `jit`,
`pixeldit`, `pixnerd`, `deco`, which share `interop` and the rule engine `keymap`)."""

from pixdiff.config.exports import exports, lazy_exports

_EXPORTS = {
    **exports("pixdiff.checkpoints.loader", "load_model", "open_checkpoint"),
    **exports("pixdiff.checkpoints.layouts", "LAYOUTS"),
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
