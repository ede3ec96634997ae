"""What the experiments page's writers share: the margins a difference must exceed to count, the
comparison they decide with, and image links from the page to its figures. The report and each
section writer import it (it imports neither), so no section needs the report module."""

from __future__ import annotations

import os
from pathlib import Path

from experiments import common

# A difference counts only if it exceeds this (dB) for PSNR ...
PSNR_MARGIN_DB = 0.5
# ... and, for FD-EffNet, the larger of this fraction of the smaller value and twice the larger row std.
FD_REL_MARGIN = 0.05


def img(path: str, alt: str) -> str:
    """A markdown image link from the page (in docs/) to a figure recorded repo-relative (or absolute)."""
    return f"![{alt}]({Path(os.path.relpath(common.REPO / path, common.DOCS)).as_posix()})"


def margin(x: dict, y: dict) -> float:
    spread = max(x["fd_effnet_std"] or 0.0, y["fd_effnet_std"] or 0.0)
    return max(FD_REL_MARGIN * min(x["fd_effnet_mean"], y["fd_effnet_mean"]), 2 * spread)


def compare(x: dict, y: dict) -> str:
    """'better' / 'worse' / 'tie' for x against y by FD-EffNet (lower is better)."""
    d = y["fd_effnet_mean"] - x["fd_effnet_mean"]
    m = margin(x, y)
    return "better" if d > m else "worse" if d < -m else "tie"
