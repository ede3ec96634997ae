"""Evaluation: feature extractors (`features`), FD/precision/recall/KID arithmetic (`metrics`), the
patch seam score (`seams`), metrics on pixels and block means (`pixels`) and their sanity rows
against blurred, noised and seamed data (`sanity`)."""

from pixdiff.config.exports import exports, lazy_exports

_EXPORTS = {
    **exports("pixdiff.eval.metrics", "evaluate"),
    **exports("pixdiff.eval.pixels", "detail_ratio", "psnr"),
    **exports("pixdiff.eval.sanity", "METRICS", "ROWS", "run_sanity"),
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
