"""Evaluation: feature extractors (`features`), FD/precision/recall/KID arithmetic (`metrics`), the
patch seam score (`seams`), metrics on pixels and block means (`pixels`), their sanity rows
against blurred, noised and seamed data (`sanity`), and the denoising readout per frequency band
(`readout`)."""

from pixdiff.config.exports import exports, lazy_exports

_EXPORTS = {
    **exports("pixdiff.eval.metrics", "evaluate"),
    **exports("pixdiff.eval.pixels", "detail_ratio", "edge_sharpness", "grain", "psnr"),
    **exports("pixdiff.eval.sanity", "BLURRY", "EFFNET_METRICS", "GRAINY", "METRICS", "MILD_BLUR", "MILD_NOISE",
              "PIXEL_METRICS", "ROWS", "SanityResult", "format_table", "run_sanity"),
    **exports("pixdiff.eval.readout", "READOUT_TIMES", "bands", "denoising_readout"),
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
