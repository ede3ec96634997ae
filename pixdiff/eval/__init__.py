"""Layer 3, evaluation: feature extractors (`features`), FD/precision/recall/KID arithmetic
(`metrics`) and the patch seam score (`seams`)."""
