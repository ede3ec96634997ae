import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.nn.patches import from_patches, patchify, to_patches, unpatchify

shapes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 4),  # C
    st.integers(1, 5),  # P
    st.integers(1, 4),  # grid rows
    st.integers(1, 4),  # grid cols (non-square grids included)
)


@settings(deadline=None, max_examples=60)
@given(shapes)
def test_round_trips_are_exact(shape):
    B, C, P, gh, gw = shape
    x = torch.randn(B, C, gh * P, gw * P)
    tokens = patchify(x, P)
    assert tokens.shape == (B, gh * gw, C * P * P)
    assert torch.equal(unpatchify(tokens, P, gh * P, gw * P), x)
    patches = to_patches(x, P)
    assert patches.shape == (B * gh * gw, C, P, P)
    assert torch.equal(from_patches(patches, gh * P, gw * P), x)
    # a patch batch is the token sequence reshaped: same channel-major order
    assert torch.equal(patches.reshape(B, gh * gw, -1), tokens)


@settings(deadline=None, max_examples=40)
@given(shapes)
def test_agrees_with_unfold_and_fold(shape):
    B, C, P, gh, gw = shape
    x = torch.randn(B, C, gh * P, gw * P)
    expected = F.unfold(x, kernel_size=P, stride=P).transpose(1, 2)  # (B, N, C*P*P)
    assert torch.equal(patchify(x, P), expected)
    folded = F.fold(expected.transpose(1, 2), output_size=(gh * P, gw * P), kernel_size=P, stride=P)
    assert torch.equal(unpatchify(expected, P, gh * P, gw * P), folded)


def test_raster_token_order():
    P, gh, gw = 2, 2, 3
    # each patch filled with its raster index
    x = torch.arange(gh * gw, dtype=torch.float32).view(1, 1, gh, gw)
    x = x.repeat_interleave(P, 2).repeat_interleave(P, 3)
    tokens = patchify(x, P)
    assert tokens[0, :, 0].tolist() == list(range(gh * gw))
    assert (tokens[0] == tokens[0, :, :1]).all()


@pytest.mark.parametrize("fn", [lambda x: patchify(x, 16), lambda x: to_patches(x, 16)])
def test_indivisible_size_names_both_sizes(fn):
    with pytest.raises(ValueError, match=r"250x256.*patch size 16"):
        fn(torch.zeros(1, 3, 250, 256))
