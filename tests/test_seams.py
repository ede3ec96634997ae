"""The seam score: closed-form values on constructed images, invariances, argument errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.eval.seams import border_ratio, seam_score


def ramp(size: int, gy: float, gx: float) -> torch.Tensor:
    rows = torch.arange(size, dtype=torch.float64)[:, None]
    cols = torch.arange(size, dtype=torch.float64)[None, :]
    return (gy * rows + gx * cols).expand(2, 3, size, size)  # (B, C, H, W)


@pytest.mark.parametrize(("gy", "gx"), [(1.0, 0.0), (0.5, -2.0), (3.0, 3.0)])
def test_a_linear_ramp_has_no_seams(gy: float, gx: float) -> None:
    # every horizontal pair differs by |gx| and every vertical one by |gy|, on borders and inside alike
    assert border_ratio(ramp(32, gy, gx), 8) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("g", "step", "patch"), [(1.0, 3.0, 8), (0.25, 1.0, 4), (2.0, 0.0, 16)])
def test_a_step_at_every_patch_border_gives_its_closed_form(g: float, step: float, patch: int) -> None:
    # x[i, j] = g*j + step*floor(j/P): horizontal pairs differ by g inside a patch and g + step across
    # a border, vertical pairs by 0; on a square image both sets hold as many vertical pairs per
    # horizontal one (H*(W/P-1) vs W*(H/P-1) at borders), so the ratio is (g + step) / g
    cols = torch.arange(32, dtype=torch.float64)
    x = (g * cols + step * torch.div(cols, patch, rounding_mode="floor")).expand(1, 1, 32, 32)
    assert border_ratio(x, patch) == pytest.approx((g + step) / g, rel=1e-12)


def test_flat_patches_with_steps_are_all_seam() -> None:
    x = torch.arange(4.0).repeat_interleave(8).expand(1, 1, 32, 32)  # constant inside each 8 px patch
    assert border_ratio(x, 8) == float("inf")


@settings(deadline=None, max_examples=25)
@given(scale=st.floats(0.1, 10.0) | st.floats(-10.0, -0.1), offset=st.floats(-5.0, 5.0), seed=st.integers(0, 99))
def test_ratio_ignores_contrast_and_brightness(scale: float, offset: float, seed: int) -> None:
    x = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert border_ratio(scale * x + offset, 8) == pytest.approx(border_ratio(x, 8), rel=1e-9)


def test_seam_score_is_relative_to_the_reference() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(4, 3, 32, 32, generator=g)
    assert seam_score(ref, ref, 8) == 1.0
    blocky = ref + 3 * torch.randn(4, 3, 4, 4, generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)
    assert seam_score(blocky, ref, 8) > 1.5  # a random offset per patch adds contrast only at borders


@pytest.mark.parametrize(("shape", "patch", "message"), [
    ((1, 3, 8, 8), 8, "no patch borders"), ((1, 3, 12, 16), 8, "not divisible"), ((1, 3, 8, 8), 1, ">= 2"),
])
def test_bad_arguments(shape: tuple[int, ...], patch: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        border_ratio(torch.zeros(shape), patch)
