"""The CUDA paths, run where a GPU is present (skipped elsewhere; benchmarks/run_gpu.sh runs them first).

What only a GPU shows: the model on CUDA agrees with the CPU within fp32/TF32 rounding; bf16 inference
stays close to fp32; per-sample generators on CUDA make a sample independent of its batch; one bf16
training step runs and lowers the loss on a fixed batch.
"""

from __future__ import annotations

import pytest
import torch

from pixdiff.diffusion.sampling import inference_network
from pixdiff.pipelines.generate import sample_batch
from pixdiff.recipe import load_recipe
from pixdiff.runtime.rng import seed_generators

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def small_recipe():
    return load_recipe("dip_xl16", ["model.backbone.depth=2", "model.backbone.dim=192", "model.backbone.heads=4",
                                    "model.backbone.image_size=64", "model.backbone.num_classes=10"])


def built(recipe, device):
    torch.manual_seed(0)
    model = recipe.model.build().to(device).eval()
    for p in model.parameters():  # the head's last conv and the final layers start at zero: move them
        p.data.add_(0.02 * torch.randn_like(p))
    return model


def test_cuda_forward_matches_the_cpu():
    recipe = small_recipe()
    cpu, gpu = built(recipe, "cpu"), built(recipe, "cuda")
    gpu.load_state_dict(cpu.state_dict())
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(4, 3, 64, 64, generator=g), torch.rand(4, generator=g), torch.arange(4)
    with torch.no_grad():
        a = cpu(x, t, y)
        b = gpu(x.cuda(), t.cuda(), y.cuda()).cpu()
    # fp32 on both sides but other kernels (cuBLAS may use TF32 for convolutions: 10-bit mantissa,
    # ~1e-3 relative per product) and other summation orders: allow 1e-2 of the output's scale
    assert (a - b).abs().max() <= 1e-2 * a.abs().max()


def test_bf16_inference_stays_close_to_fp32():
    recipe = small_recipe()
    fp32 = built(recipe, "cuda")
    bf16 = built(recipe, "cuda")
    net32, net16 = inference_network(fp32, dtype="fp32"), inference_network(bf16, dtype="bf16")
    y = torch.arange(4, device="cuda")
    a = sample_batch(net32, recipe, y, seed_generators(range(4), "cuda"), steps=8)
    b = sample_batch(net16, recipe, y, seed_generators(range(4), "cuda"), steps=8)
    # bf16 keeps 8 mantissa bits (~4e-3 relative); 8 Euler steps of a random net compound a few of those
    assert (a - b).abs().mean() < 0.05 and (a - b).abs().max() < 0.5


def test_cuda_samples_do_not_depend_on_the_batch():
    recipe = small_recipe()
    net = inference_network(built(recipe, "cuda"))
    y = torch.arange(6, device="cuda") % 10
    together = sample_batch(net, recipe, y, seed_generators(range(6), "cuda"), steps=4)
    alone = torch.cat([sample_batch(net, recipe, y[i:i + 1], seed_generators([i], "cuda"), steps=4)
                       for i in range(6)])
    # the noise is identical per sample; only the kernels' batch-dependent reduction order differs
    assert (together - alone).abs().max() < 1e-3


def test_a_bf16_training_step_on_cuda_lowers_the_loss():
    recipe = small_recipe()
    model = built(recipe, "cuda").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.rand(8, 3, 64, 64, device="cuda", generator=g) * 2 - 1
    y = torch.arange(8, device="cuda") % 10
    noise = torch.randn(x.shape, device="cuda", generator=g)
    t = torch.full((8,), 0.5, device="cuda")
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", torch.bfloat16):  # the training precision of the recipes
            loss, _ = recipe.objective.loss(model, x, y, num_classes=10, t=t, noise=noise,
                                            generator=torch.Generator("cuda").manual_seed(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(v == v for v in losses) and losses[-1] < 0.8 * losses[0]
