"""Layer 3, evaluation: feature extractors (`features`), FD/precision/recall/KID arithmetic
(`metrics`), the patch seam score (`seams`), metrics on pixels and block means (`pixels`) and their
sanity rows against blurred, noised and seamed data (`sanity`)."""
