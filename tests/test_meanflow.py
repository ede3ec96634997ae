"""MeanFlow: the average-velocity objective, its JVP target, the interval embedding and the few-step sampler.

Gaussian data x0 ~ N(mu, sd^2) per element on the flow-matching path (t = 1 data) makes the average
velocity analytic (`gaussian_mean_flow`): x_t ~ N(t mu, s(t)^2), s(t) = sqrt(t^2 sd^2 + (1-t)^2), the
ODE's map is x_r = r mu + s(r)/s(t) (x_t - t mu), so u(x_t, t, r) = (x_r - x_t)/(r - t).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from typer.testing import CliRunner

from pixdiff.cli import app
from pixdiff.config import replace
from pixdiff.config.tree import OverrideError
from pixdiff.data.npz import load_images
from pixdiff.diffusion.objectives import (
    FlowMatching,
    MeanFlow,
    XPrediction,
    gaussian_mean_flow,
    gaussian_model,
    guided_velocity,
    mean_flow_target,
)
from pixdiff.diffusion.sampling import sample_images
from pixdiff.diffusion.solvers import heun, meanflow, uniform_grid
from pixdiff.recipe import RecipeError, load_recipe, with_sampler
from pixdiff.train.finetune import INTERVAL_EMBEDDER, transfer

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64
MU = torch.tensor([0.3, -0.5, 1.0, 0.0], dtype=F64).view(4, 1, 1)
SD = torch.tensor([0.5, 1.0, 0.2, 1.5], dtype=F64).view(4, 1, 1)
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8"]
TRAIN = ["train.global_batch=4", "train.sample_every=0", "train.max_steps=2", "train.log_every=1"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_model(interval: bool, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    r = load_recipe("emoji_tiny", [*TINY, f"model.backbone.interval_embed={str(interval).lower()}"])
    return r.model.build().to(dtype).eval()


# ------------------------------------------------------------------ closed forms
@settings(deadline=None, max_examples=25)
@given(t=st.floats(0.0, 0.9), h=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_exact_average_velocity_moves_along_the_ode(t, h, seed):
    r = min(t + h, 1.0)
    x = MU * t + torch.sqrt(t * t * SD * SD + (1 - t) ** 2) * torch.randn(3, 4, 1, 1, generator=gen(seed), dtype=F64)
    u = gaussian_mean_flow(MU, SD)
    tt, rr = torch.full((3,), t, dtype=F64), torch.full((3,), r, dtype=F64)
    jump = x + (r - t) * u(x, tt, None, r=rr)
    v = gaussian_model(FlowMatching(), MU, SD)
    # heun's last step (into r) is an Euler step: O(1/n^2) locally, hence n = 1000
    ode = heun(lambda z, s: v(z, s, None), x, torch.linspace(t, r, 1000, dtype=F64))
    assert torch.allclose(jump, ode, atol=1e-5)
    assert torch.allclose(u(x, tt, None), v(x, tt, None), atol=1e-12)  # r = t: the instantaneous velocity


@settings(deadline=None, max_examples=25)
# h = 0 exactly, or an interval the closed form can divide by (a subnormal h overflows its (r - t) quotient)
@given(t=st.floats(0.0, 0.95), h=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), seed=st.integers(0, 2**16))
def test_the_jvp_target_of_the_exact_average_velocity_is_itself(t, h, seed):
    """u = v + (r - t) du/dt holds for the exact u with the marginal velocity v; the training target
    uses the conditional velocity x0 - eps instead, which is linear in v, so its mean given x_t is this."""
    r = min(t + h, 1.0)
    x = torch.randn(5, 4, 1, 1, generator=gen(seed), dtype=F64)
    tt, rr = torch.full((5,), t, dtype=F64), torch.full((5,), r, dtype=F64)
    u = gaussian_mean_flow(MU, SD)
    v = gaussian_model(FlowMatching(), MU, SD)(x, tt, None)
    out, target = mean_flow_target(lambda z, a, b: u(z, a, None, r=b), x, tt, rr, v)
    assert torch.allclose(out, target, atol=1e-10) and torch.allclose(out, u(x, tt, None, r=rr))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_meanflow_steps_with_the_exact_u_map_noise_onto_the_data(steps):
    z = torch.randn(64, 4, 1, 1, generator=gen(3), dtype=F64)
    u = gaussian_mean_flow(MU, SD)
    x = meanflow(lambda x, t, r: u(x, t, None, r=r), z, uniform_grid(steps, dtype=F64))
    assert torch.allclose(x, MU + SD * z, atol=1e-12)  # the transport map noise -> N(mu, sd^2)


def test_sample_images_runs_the_meanflow_solver_through_cfg_at_scale_1():
    u = gaussian_mean_flow(MU.float(), SD.float())
    y = torch.zeros(8, dtype=torch.long)
    out = sample_images(u, MeanFlow(), y, shape_chw=(4, 1, 1), num_classes=9, steps=1, solver="meanflow",
                        generators=[gen(i) for i in range(8)])
    z = torch.stack([torch.randn(4, 1, 1, generator=gen(i)) for i in range(8)])
    assert torch.allclose(out, (MU.float() + SD.float() * z).clamp(-1, 1), atol=1e-5)
    with pytest.raises(ValueError, match="cfg_scale=1"):
        sample_images(u, MeanFlow(), y, shape_chw=(4, 1, 1), num_classes=9, steps=1, solver="meanflow", cfg_scale=2.0)


# ------------------------------------------------------------------ guidance trained in
MU_NULL = torch.tensor([0.0, 0.4, -0.2, 0.5], dtype=F64).view(4, 1, 1)


@settings(deadline=None, max_examples=25)
@given(t=st.floats(0.0, 0.95), h=st.floats(1e-3, 1.0), w=st.floats(1.0, 4.0), seed=st.integers(0, 2**16))
def test_guided_target_of_two_gaussians_is_the_average_velocity_of_the_guided_gaussian(t, h, w, seed):
    """With one sd, the velocity of N(mu, sd^2) is affine in mu at fixed x_t, so the guided field
    w v_c + (1 - w) v_null is the velocity of N(w mu_c + (1 - w) mu_null, sd^2); the MeanFlow
    target built on it from that flow's exact average velocity is that average velocity itself."""
    r = min(t + h, 1.0)
    x = torch.randn(5, 4, 1, 1, generator=gen(seed), dtype=F64)
    tt, rr = torch.full((5,), t, dtype=F64), torch.full((5,), r, dtype=F64)
    v_c, v_null = (gaussian_model(FlowMatching(), mu, SD)(x, tt, None) for mu in (MU, MU_NULL))
    mu_g = w * MU + (1 - w) * MU_NULL
    guided = guided_velocity(v_c, v_null, torch.ones(5, dtype=torch.bool), w)
    assert torch.allclose(guided, gaussian_model(FlowMatching(), mu_g, SD)(x, tt, None), atol=1e-10)
    u = gaussian_mean_flow(mu_g, SD)
    out, target = mean_flow_target(lambda z, a, b: u(z, a, None, r=b), x, tt, rr, guided)
    assert torch.allclose(target, out, atol=1e-9) and torch.allclose(out, u(x, tt, None, r=rr))


def test_guided_loss_mixes_the_null_velocity_into_labelled_samples_only():
    """A model constant in x and t (du/dt = 0): the target is the guided velocity, exactly; scale 1
    costs no extra forward pass, any other scale one, with every label null."""
    a = torch.randn(3, 4, 1, 1, generator=gen(0), dtype=F64)  # outputs for labels 0, 1 and the null label 2
    calls = []

    def model(x, t, y, r=None):
        calls.append(y.clone())
        return a[y] + 0 * x

    x, eps = (torch.randn(4, 4, 1, 1, generator=gen(i), dtype=F64) for i in (1, 2))
    y, t = torch.tensor([0, 1, 2, 0]), torch.tensor([0.2, 0.5, 0.7, 0.9], dtype=F64)
    for w in (1.0, 2.5):
        calls.clear()
        loss, _ = MeanFlow(label_dropout=0.0, norm_p=0.0, cfg_scale=w).loss(model, x, y, num_classes=2, t=t, noise=eps)
        scale = torch.tensor([w, w, 1.0, w], dtype=F64).view(4, 1, 1, 1)  # the null-labelled sample is not guided
        target = scale * (x - eps) + (1 - scale) * a[2]
        assert torch.allclose(loss, (a[y] - target).square().mean())
        assert len(calls) == (1 if w == 1 else 2) and (w == 1 or torch.equal(calls[0], torch.full((4,), 2)))


# ------------------------------------------------------------------ the loss
def test_r_equal_t_is_flow_matching_and_x_prediction():
    model = tiny_model(True)
    x = torch.randn(4, 3, 16, 16, generator=gen(0))
    y, eps, t = torch.tensor([0, 3, 9, 2]), torch.randn(4, 3, 16, 16, generator=gen(1)), torch.tensor([0.1, 0.4, 0.7, 0.9])
    fm, _ = FlowMatching(label_dropout=0.0).loss(model, x, y, num_classes=9, t=t, noise=eps)
    mf, stats = MeanFlow(label_dropout=0.0, norm_p=0.0).loss(model, x, y, num_classes=9, t=t, noise=eps)
    assert torch.allclose(fm, mf, rtol=1e-5) and torch.allclose(stats["mse"], fm, rtol=1e-5)
    xp, _ = XPrediction(label_dropout=0.0, t_eps=0.05).loss(model, x, y, num_classes=9, t=t, noise=eps)
    mfx, _ = MeanFlow(label_dropout=0.0, norm_p=0.0, prediction="x0").loss(model, x, y, num_classes=9, t=t, noise=eps)
    assert torch.allclose(xp, mfx, rtol=1e-4)


def test_adaptive_weight_divides_each_samples_error_by_its_detached_norm():
    u = gaussian_mean_flow(MU, SD)
    x, y = torch.randn(3, 4, 1, 1, generator=gen(0), dtype=F64), torch.zeros(3, dtype=torch.long)
    t, eps = torch.tensor([0.2, 0.5, 0.8], dtype=F64), torch.randn(3, 4, 1, 1, generator=gen(1), dtype=F64)
    obj = MeanFlow(label_dropout=0.0, norm_p=1.0, norm_eps=0.5)
    loss, stats = obj.loss(u, x, y, num_classes=1, t=t, noise=eps)
    x_t = t.view(3, 1, 1, 1) * x + (1 - t.view(3, 1, 1, 1)) * eps
    d = (u(x_t, t, None) - (x - eps)).flatten(1).square().mean(1)
    assert torch.allclose(loss, (d / (d + 0.5)).mean()) and torch.allclose(stats["mse"], d.mean())


def test_jvp_matches_finite_differences_of_a_tiny_model():
    model = tiny_model(True, dtype=F64)
    for p in model.backbone.r_embedder.parameters():  # leave the zero init so that r matters
        torch.nn.init.normal_(p, std=0.3)
    x, v = torch.randn(2, 3, 16, 16, generator=gen(0), dtype=F64), torch.randn(2, 3, 16, 16, generator=gen(1), dtype=F64)
    t, r, y = torch.tensor([0.2, 0.5], dtype=F64), torch.tensor([0.7, 0.9], dtype=F64), torch.tensor([1, 9])

    def u(z, a, b):
        return model(z, a, y, r=b)

    with torch.no_grad():
        out, target = mean_flow_target(u, x, t, r, v)
        du_dt = (target - v) / (r - t).view(2, 1, 1, 1)
        e = 1e-5
        fd = (u(x + e * v, t + e, r) - u(x - e * v, t - e, r)) / (2 * e)
    assert torch.allclose(out, u(x, t, r)) and fd.abs().max() > 1e-3
    assert torch.allclose(du_dt, fd, rtol=1e-7, atol=1e-9)


def test_sample_interval_orders_times_and_keeps_the_ratio():
    t, r = MeanFlow(interval_ratio=0.25).sample_interval(4000, generator=gen(0))
    assert (t <= r).all() and 0.2 < (r > t).float().mean() < 0.3
    t0, r0 = MeanFlow(interval_ratio=0.0).sample_interval(50, generator=gen(0))
    assert torch.equal(t0, r0)
    per = MeanFlow().sample_interval(3, generator=[gen(5), gen(6), gen(7)])
    alone = MeanFlow().sample_interval(1, generator=[gen(6)])
    assert torch.equal(per[0][1:2], alone[0]) and torch.equal(per[1][1:2], alone[1])


# ------------------------------------------------------------------ the interval embedding, checkpoints
def test_an_old_checkpoint_loads_strictly_and_predicts_as_before():
    """tests/data/dip_tiny_main.safetensors: a tiny DiP's state dict and one output, written by main
    before MeanFlow (seed 0): with the flag off it loads strictly and gives that output (to fp32 rounding)."""
    saved = load_file(ROOT / "tests" / "data" / "dip_tiny_main.safetensors")
    state = {k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")}
    old = tiny_model(False, seed=1)
    old.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = old(saved["io.x"], saved["io.t"], saved["io.y"])
        # the recorded output came from another process, maybe another CPU (other SIMD sums): fp32 rounding
        assert torch.allclose(out, saved["io.out"], rtol=1e-5, atol=1e-6)
        new = tiny_model(True, seed=1)
        missing, unexpected = new.load_state_dict(state, strict=False)
        assert not unexpected and missing and all(k.startswith(INTERVAL_EMBEDDER) for k in missing)
        # zero-initialised: the flag-on model predicts as the old one bit for bit, at r = t and at any r
        assert torch.equal(new(saved["io.x"], saved["io.t"], saved["io.y"]), out)
        assert torch.equal(new(saved["io.x"], saved["io.t"], saved["io.y"], r=torch.ones(2)), out)
    with pytest.raises(ValueError, match="no interval embedding"):
        old(saved["io.x"], saved["io.t"], saved["io.y"], r=torch.ones(2))


def test_transfer_takes_the_fresh_interval_embedder_only_when_the_source_has_none():
    source = tiny_model(False).state_dict()
    fresh = tiny_model(True, seed=2).state_dict()
    state = transfer(source, fresh)
    assert set(state) == set(fresh)
    assert all(torch.equal(state[k], source[k]) for k in source)
    assert all(torch.equal(state[k], fresh[k]) for k in fresh if k.startswith(INTERVAL_EMBEDDER))
    with pytest.raises(ValueError, match="unused"):  # a MeanFlow source into a flow-matching model
        transfer(fresh, source)


# ------------------------------------------------------------------ recipes and the CLI
def test_bad_meanflow_combinations_are_one_line_errors():
    with pytest.raises(OverrideError, match="interval_embed=true"):
        load_recipe("emoji_tiny:meanflow", ["model.backbone.interval_embed=false"])
    with pytest.raises(RecipeError, match="needs a model trained with the MeanFlow objective"):
        with_sampler(load_recipe("emoji_tiny"), solver="meanflow", cfg_scale=1.0)
    with pytest.raises(RecipeError, match=r"^sample.cfg_scale=3.0: the meanflow solver"):
        with_sampler(load_recipe("emoji_tiny:meanflow"), cfg_scale=3.0)
    for bad in ("objective.interval_ratio=1.5", "objective.norm_p=-1", "objective.norm_eps=0",
                "objective.cfg_scale=0.5", "objective.cfg_scale=nan"):
        with pytest.raises(OverrideError, match=bad.split("=")[0]):
            load_recipe("emoji_tiny:meanflow", [bad])


def cli(*args: str) -> SimpleNamespace:
    res = CliRunner().invoke(app, [*args, "--device", "cpu"])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def test_train_from_scratch_fine_tune_and_sample_in_1_2_and_4_steps(tmp_path):
    sets = [a for s in [*TINY, *TRAIN, f"data.cache_dir={tmp_path / 'cache'}"] for a in ("--set", s)]
    fm = cli("train", "emoji_tiny", *sets, "--out", str(tmp_path / "fm"), "--no-progress")
    assert fm.returncode == 0, fm.stderr[-2000:]
    for name, extra in (("scratch", []), ("finetune", ["--init-from", str(tmp_path / "fm")])):
        res = cli("train", "emoji_tiny:meanflow", *sets, *extra, "--out", str(tmp_path / name), "--no-progress")
        assert res.returncode == 0, res.stderr[-2000:]
    for steps in ("1", "2", "4"):
        out = tmp_path / f"samples{steps}"
        res = cli("sample", str(tmp_path / "finetune"), "--out", str(out), "--num", "4", "--steps", steps)
        assert res.returncode == 0, res.stderr[-2000:]
        images = load_images(out / "samples.npz")
        assert images.shape == (4, 16, 16, 3) and images.std() > 0
    bad = tmp_path / "bad"
    res = cli("sample", str(tmp_path / "fm"), "--out", str(bad), "--num", "2", "--solver", "meanflow", "--cfg", "1")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "MeanFlow objective" in res.stderr
    assert not bad.exists()
    # an edit runs the velocity ODE step by step: the meanflow solver (the recipe's default) is refused
    # in one line, and any other solver edits the MeanFlow model as a plain velocity model
    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    res = cli("edit", str(tmp_path / "finetune"), str(tmp_path / "grey.png"), "--out", str(tmp_path / "e"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--solver euler or heun" in res.stderr
    assert not (tmp_path / "e").exists()
    res = cli("edit", str(tmp_path / "finetune"), str(tmp_path / "grey.png"), "--out", str(tmp_path / "e"),
              "--solver", "euler", "--steps", "4", "--cfg", "1")
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("spec", ["emoji_tiny", "jit:tiny", "pixnerd:tiny", "pixeldit:tiny", "deco:tiny"])
def test_every_family_trains_meanflow_with_guidance_and_samples_in_2_steps(spec):
    """The objective and the second time input on each built-in backbone + head (2 blocks, 4x4 tokens)."""
    r = load_recipe(spec)
    b = r.model.backbone
    r = replace(r, objective=MeanFlow(label_dropout=0.5, cfg_scale=2.0),
                **{"model.backbone.interval_embed": True, "model.backbone.depth": min(b.depth, 2),
                   "model.backbone.image_size": 4 * b.patch_size})
    torch.manual_seed(0)
    model = r.model.build()
    x = torch.randn(4, 3, 4 * b.patch_size, 4 * b.patch_size, generator=gen(0))
    loss, _ = r.objective.loss(model, x, torch.tensor([0, 1, 2, 0]), num_classes=b.num_classes, generator=gen(1))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    out = sample_images(model.eval(), r.objective, torch.tensor([0, 1]), shape_chw=tuple(x.shape[1:]),
                        num_classes=b.num_classes, steps=2, solver="meanflow", generators=[gen(i) for i in range(2)])
    assert torch.isfinite(out).all() and out.shape == (2, *x.shape[1:])


@pytest.mark.parametrize("spec", ["dip_xl16:meanflow", "jit:b16_meanflow"])
def test_the_gpu_scripts_meanflow_recipes_run_in_the_bench_at_one_evaluation_per_step(spec):
    """benchmarks/run_gpu.sh's MeanFlow cases, on the CPU with the backbone shrunk: the recipe's
    meanflow solver runs 1 and 2 steps at one network evaluation each (no CFG), and a training step
    with the JVP runs in `bench throughput --mode train`."""
    from pixdiff.bench import latency, throughput

    shrink = ["model.backbone.depth=2", "model.backbone.dim=64", "model.backbone.num_heads=2",
              "model.backbone.image_size=32"]
    r = load_recipe(spec, shrink + ["model.backbone.in_context_start=1"] * spec.startswith("jit"))
    assert isinstance(r.objective, MeanFlow) and r.model.backbone.interval_embed and r.sample.solver == "meanflow"
    for steps in (1, 2):
        got = latency(r, steps=steps, device="cpu", warmup=1, repeats=1, baseline=False)
        assert got["nfe"] == steps and got["nfe_guided"] == 0
    trained = throughput(r, mode="train", batch=2, device="cpu", warmup=1, iters=1)
    assert trained["images_per_s"] > 0
