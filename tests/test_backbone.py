import math

import pytest
import torch

from pixdiff.nn.backbone import DiTConfig, RMSNorm, apply_rope, rope_2d, timestep_embedding

TINY = DiTConfig(depth=3, dim=64, num_heads=4, patch_size=4, image_size=16, num_classes=5)


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 0.5, 1.0])
    emb = timestep_embedding(t, 8, max_period=10.0)
    freqs = [10.0 ** (-k / 4) for k in range(4)]
    expected = [[math.cos(tt * f) for f in freqs] + [math.sin(tt * f) for f in freqs] for tt in t.tolist()]
    torch.testing.assert_close(emb, torch.tensor(expected))


def test_rmsnorm_runs_in_float32_for_bf16_inputs():
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(4, 16) * 100).bfloat16()
    out = norm(x)
    assert out.dtype == torch.bfloat16
    x32 = x.float()
    expected = x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert torch.equal(out, expected.bfloat16())


def test_rope_positions_are_normalised_and_pairs_interleave_x_then_y():
    cos, sin = rope_2d(8, 3, 5, extent=16.0, theta=10000.0)  # 2 freqs per axis
    angles = torch.atan2(sin, cos)
    # token (row 2, col 4) is the last one: x = y = 16 at the top frequency 1
    assert angles.shape == (15, 4)
    freqs = [1.0, 10000 ** (-4 / 8)]
    xs, ys = torch.linspace(0, 16, 5), torch.linspace(0, 16, 3)
    for n in range(15):
        r, c = divmod(n, 5)
        expected = torch.tensor([xs[c] * freqs[0], ys[r] * freqs[0], xs[c] * freqs[1], ys[r] * freqs[1]])
        torch.testing.assert_close(cos[n], expected.cos())
        torch.testing.assert_close(sin[n], expected.sin())


def test_rope_scores_depend_only_on_relative_position():
    g = 4
    cos, sin = rope_2d(16, g, g, extent=16.0, theta=100.0)
    q, k = torch.randn(16), torch.randn(16)
    rq = apply_rope(q.expand(1, 1, g * g, 16), cos, sin)[0, 0]  # (N, 16)
    rk = apply_rope(k.expand(1, 1, g * g, 16), cos, sin)[0, 0]
    score = rq @ rk.T  # (N, N)
    idx = lambda r, c: r * g + c  # noqa: E731
    # same (dr, dc) offset -> same score, anywhere on the grid
    torch.testing.assert_close(score[idx(0, 0), idx(1, 2)], score[idx(2, 1), idx(3, 3)])
    torch.testing.assert_close(score[idx(3, 3), idx(2, 0)], score[idx(1, 3), idx(0, 0)])
    # and rotation keeps norms
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(g * g))


def test_backbone_outputs_and_hooks():
    torch.manual_seed(0)
    dit = TINY.build().eval()
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 5])
    out = dit(x, t, y, return_blocks=(0, 2))
    assert out.tokens.shape == out.s.shape == (2, 16, 64)
    assert out.c.shape == out.t_emb.shape == (2, 64)
    torch.testing.assert_close(out.s, torch.nn.functional.silu(out.t_emb[:, None] + out.tokens))
    torch.testing.assert_close(out.blocks[2], out.tokens)
    # a hook after block 0 changes everything downstream and is seen by return_blocks
    hooked = dit(x, t, y, hooks={0: lambda tok, t_emb, c: tok * 0}, return_blocks=(0,))
    assert torch.equal(hooked.blocks[0], torch.zeros_like(hooked.blocks[0]))
    assert not torch.allclose(hooked.tokens, out.tokens)


def test_backbone_accepts_other_grids_with_normalised_rope():
    dit = TINY.build()
    out = dit(torch.randn(1, 3, 8, 24), torch.rand(1), torch.tensor([1]))
    assert out.tokens.shape == (1, 12, 64)


def test_backbone_conformance():
    from pixdiff.testing import check_backbone

    check_backbone(TINY)


def test_config_validation():
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        DiTConfig(patch_size=16, image_size=200)
    with pytest.raises(ValueError, match="num_heads"):
        DiTConfig(dim=100, num_heads=16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_xformers_and_sdpa_agree_on_gpu():
    pytest.importorskip("xformers")
    import dataclasses

    torch.manual_seed(0)
    sdpa = dataclasses.replace(TINY, dim=128, num_heads=2).build().cuda()
    xf = dataclasses.replace(TINY, dim=128, num_heads=2, attention="xformers").build().cuda()
    xf.load_state_dict(sdpa.state_dict())
    x = torch.randn(4, 3, 16, 16, device="cuda")
    t, y = torch.rand(4, device="cuda"), torch.randint(0, 5, (4,), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(xf(x, t, y).tokens, sdpa(x, t, y).tokens, atol=2e-3, rtol=2e-3)
