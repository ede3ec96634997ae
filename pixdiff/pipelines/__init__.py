"""Using a trained model, over the pure functions of `pixdiff.diffusion`: sample sets (`generate`),
editing sessions (`edit`: SDEdit, inpainting, inversion, interpolation), `pixdiff.load`
(`pretrained`), FD/KID of small sample sets (`scoring`) and sweeps over sampler settings
(`sweep`). Models come from `pixdiff.checkpoints.loader`."""

from pixdiff.config.exports import exports, lazy_exports

_EXPORTS = {
    **exports("pixdiff.pipelines.pretrained", "Pretrained", "load"),
    **exports("pixdiff.pipelines.generate", "SampleJob", "write_samples", "sample_batch", "draw_set"),
    **exports("pixdiff.pipelines.scoring", "open_scorer", "score_images"),
    **exports("pixdiff.pipelines.edit", "EditSession", "open_session"),
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
