"""Seam score: how much sharper images change across patch borders than inside patches.

A per-patch head refines every P x P patch alone, so its samples can show a grid of seams. The
measure is the mean absolute difference between neighbouring pixels (horizontal and vertical
pairs pooled) over the pairs that straddle a patch border, divided by the same mean over the pairs
inside a patch:

    border_ratio(images, P) = mean |x_a - x_b| over border pairs / mean |x_a - x_b| over inner pairs

It is 1 for an image whose local contrast ignores the patch grid (a linear ramp gives exactly 1 on
a square image), > 1 when borders are sharper than the inside of patches. Real images are not
exactly 1 either (content is not uniform), so samples are judged against the same ratio on
reference data: seam_score = border_ratio(samples) / border_ratio(reference), ~1 with no seams.
"""

from __future__ import annotations

import torch

from pixdiff.nn.patches import check_divisible


def border_ratio(images: torch.Tensor, patch_size: int) -> float:
    """images (B, C, H, W) (any real dtype) with H, W multiples of patch_size and at least one border.

    inf when every patch is flat inside (no inner contrast) but borders are not.
    """
    H, W = images.shape[-2:]
    check_divisible(H, W, patch_size)
    if patch_size < 2:
        raise ValueError("patch_size must be >= 2: with 1 px patches no pixel pair lies inside a patch")
    if H == W == patch_size:
        raise ValueError(f"a {H}x{W} image is a single {patch_size} px patch: it has no patch borders")
    x = images.double()
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs()  # (B, C, H, W-1): pair (j, j+1) along a row
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs()  # (B, C, H-1, W): pair (i, i+1) along a column
    cross_x = torch.arange(1, W, device=x.device) % patch_size == 0  # (W-1,): j+1 starts a new patch
    cross_y = torch.arange(1, H, device=x.device) % patch_size == 0  # (H-1,)
    border = dx[..., cross_x].sum() + dy[..., cross_y, :].sum()
    inner = dx[..., ~cross_x].sum() + dy[..., ~cross_y, :].sum()
    per_image = x[..., 0, 0].numel()  # B * C
    n_border = per_image * (H * int(cross_x.sum()) + W * int(cross_y.sum()))
    n_inner = per_image * (H * int((~cross_x).sum()) + W * int((~cross_y).sum()))
    return float((border / n_border) / (inner / n_inner))


def seam_score(samples: torch.Tensor, reference: torch.Tensor, patch_size: int) -> float:
    """border_ratio of the samples relative to that of reference images (e.g. the training data)."""
    return border_ratio(samples, patch_size) / border_ratio(reference, patch_size)
