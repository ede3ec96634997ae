"""Backbone reuse (pixdiff.diffusion.reuse): off is the plain sampler bit for bit, a schedule
recomputes exactly where it says, the head still sees the current pixels, and bad schedules are
one-line errors before anything is written."""

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.config.tree import to_dict
from pixdiff.config.validate import ConfigError
from pixdiff.diffusion.reuse import Reuse, parse_reuse, reuse_problem
from pixdiff.diffusion.sampling import guided_velocity, inference_network, sample_images
from pixdiff.diffusion.solvers import euler, shifted_grid
from pixdiff.nn import DiTFinalLayer
from pixdiff.recipe import SampleConfig, load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8"]
R = load_recipe("emoji_tiny", TINY)
BB = R.model.backbone


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def _model(head_less: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    config = dataclasses.replace(R.model, head=DiTFinalLayer()) if head_less else R.model
    return _randomised(config.build().eval())


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # random weights, without the zero-initialised output layers (JiT's final layer)
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(std=0.3)
    return model


def _gens(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def _sample(model, reuse, *, seeds=(0, 1, 2), steps=6, interval=(0.0, 1.0), solver="euler", scale=3.0):
    y = torch.tensor([s % BB.num_classes for s in seeds])
    return sample_images(model, R.objective, y, shape_chw=(3, 16, 16), num_classes=BB.num_classes, steps=steps,
                         solver=solver, cfg_scale=scale, cfg_interval=interval, generators=_gens(seeds), reuse=reuse)


def _manual(model, recompute, *, seeds=(0, 1, 2), steps=6, head_less=False):
    """Euler with CFG written out: the backbone at the listed indices only, the head every step."""
    y = torch.tensor([s % BB.num_classes for s in seeds])
    x = torch.cat([torch.randn((1, 3, 16, 16), generator=g) for g in _gens(seeds)])
    ts = shifted_grid(steps, 1.0)
    cache = None
    for i in range(steps):
        t = ts[i].expand(len(y))
        xx, tt, yy = torch.cat([x, x]), torch.cat([t, t]), torch.cat([torch.full_like(y, BB.num_classes), y])
        if i in recompute:
            cache = model(xx, tt, yy) - xx if head_less else model.features(xx, tt, yy)
        out = (model(xx, tt, yy) if i in recompute else xx + cache) if head_less else model.decode(xx, cache)
        out = out[:len(y)] + 3.0 * (out[len(y):] - out[:len(y)])
        x = x + (ts[i + 1] - ts[i]) * R.objective.predict(out, x, t).velocity
    return x.clamp(-1, 1)


def test_forward_is_decode_of_features_bit_for_bit():
    model = _model()
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 1])
    assert torch.equal(model(x, t, y), model.decode(x, model.features(x, t, y)))


@pytest.mark.parametrize("head_less", [False, True])
def test_off_and_every_step_are_the_plain_sampler_bit_for_bit(head_less):
    model = _model(head_less)
    y = torch.tensor([0, 1, 2])
    x = torch.cat([torch.randn((1, 3, 16, 16), generator=g) for g in _gens((0, 1, 2))])
    plain = euler(guided_velocity(model, R.objective, y, num_classes=BB.num_classes, cfg_scale=3.0,
                                  cfg_interval=(0.0, 1.0)), x, shifted_grid(6, 1.0)).clamp(-1, 1)
    assert torch.equal(_sample(model, None), plain)
    assert torch.equal(_sample(model, Reuse("every", every=1)), plain)
    assert torch.equal(_sample(inference_network(model), Reuse("every", every=1)), plain)


@pytest.mark.parametrize("head_less", [False, True])
def test_reuse_recomputes_at_the_scheduled_steps_and_the_head_sees_the_current_pixels(head_less):
    model = _model(head_less)
    for spec, recompute in [("every:2", {0, 2, 4}), ("steps:3", {0, 3}), ("steps:0,1,5", {0, 1, 5})]:
        reused = _sample(model, parse_reuse(spec))
        manual = _manual(model, recompute, head_less=head_less)
        assert torch.allclose(reused, manual, atol=1e-6), spec
        assert not torch.allclose(reused, _sample(model, None), atol=1e-4), spec  # it did reuse something


@pytest.mark.parametrize("changes", [{}, {"in_context_len": 2, "in_context_start": 0},
                                     {"in_context_len": 2, "in_context_start": 1}, {"pos_embed": "sincos"}])
def test_going_on_from_the_first_block_is_the_forward_bit_for_bit(changes):
    torch.manual_seed(0)
    config = dataclasses.replace(R.model, backbone=dataclasses.replace(BB, **changes))
    for model in map(_randomised, (config.build(), dataclasses.replace(config, placement="intermediate",
                                                                        inject_after=0).build())):
        x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 1])
        first, residual = model.first_block(x, t, y)
        context = changes.get("in_context_len", 0) if changes.get("in_context_start") == 0 else 0  # enter before block 0
        assert first.after.shape == residual.shape == (2, (BB.image_size // BB.patch_size) ** 2 + context, BB.dim)
        assert torch.equal(model(x, t, y, first=first), model(x, t, y))
        moved = first._replace(after=first.after + 1.0)
        assert not torch.equal(model(x, t, y, first=moved), model(x, t, y))  # block 0 was not run again


def _manual_first_block(model, threshold, *, seed=0, steps=8):
    """FirstBlockCache written out for one sample: block 0 every step, the rest when block 0's
    residual has moved by >= threshold (relative L1) from its value at the last recompute."""
    y = torch.tensor([seed % BB.num_classes])
    x = torch.randn((1, 3, 16, 16), generator=_gens((seed,))[0])
    ts = shifted_grid(steps, 1.0)
    cache = kept = None
    recomputed = []
    for i in range(steps):
        t = ts[i].expand(1)
        xx, tt, yy = torch.cat([x, x]), torch.cat([t, t]), torch.cat([torch.full_like(y, BB.num_classes), y])
        first, residual = model.first_block(xx, tt, yy)
        if kept is None or (residual - kept).abs().mean() / kept.abs().mean() >= threshold:
            cache, kept = model.features(xx, tt, yy), residual
            recomputed.append(i)
        out = model.decode(xx, cache)
        out = out[:1] + 3.0 * (out[1:] - out[:1])
        x = x + (ts[i + 1] - ts[i]) * R.objective.predict(out, x, t).velocity
    return x.clamp(-1, 1), recomputed


def test_first_block_recomputes_where_its_residual_has_moved_since_the_last_recompute():
    model = _model()
    plain = _sample(model, None, seeds=(0,), steps=8)
    assert torch.equal(_sample(model, Reuse("first-block", threshold=0.0), seeds=(0,), steps=8), plain)
    counts = []
    for threshold in (0.0, 0.02, 0.05, 0.2, 1e9):
        net = inference_network(model)
        reused = _sample(net, Reuse("first-block", threshold=threshold), seeds=(0,), steps=8)
        manual, recomputed = _manual_first_block(model, threshold)
        assert torch.allclose(reused, manual, atol=1e-6), threshold
        assert len(net.batches) == len(recomputed) and net.resumed == net.batches and net.firsts == [2] * 8
        counts.append(len(recomputed))
    assert counts[0] == 8 and counts[-1] == 1 and counts == sorted(counts, reverse=True) and len(set(counts)) > 2


@settings(max_examples=15, deadline=None)
@given(steps=st.integers(2, 8), every=st.integers(1, 8), listed=st.sets(st.integers(0, 7), min_size=1))
def test_backbone_evaluations_follow_the_schedule(steps, every, listed):
    model = _model()
    for reuse, expected in [(Reuse("every", every=every), {i for i in range(steps) if i % every == 0}),
                            (Reuse("steps", steps=tuple(sorted(listed))), {0} | {i for i in listed if i < steps})]:
        if reuse_problem(reuse.spec, steps, "euler"):
            continue
        net = inference_network(model)
        _sample(net, reuse, seeds=(0,), steps=steps)
        assert len(net.batches) == len(expected) and set(net.batches) == {2}


def test_guidance_switching_on_recomputes_both_halves_together():
    net = inference_network(_model())
    # 8 steps, guided for t in (0.5, 1): indices 5, 6, 7 run the 2B batch; every:4 adds index 5
    _sample(net, Reuse("every", every=4), seeds=(0, 1), steps=8, interval=(0.5, 1.0))
    assert net.batches == [2, 2, 4]


@pytest.mark.parametrize("reuse", [Reuse("every", every=2), Reuse("adaptive", threshold=0.05),
                                   Reuse("first-block", threshold=0.05)])
def test_reuse_is_deterministic_and_independent_of_batch_mates(reuse):
    model = _model()
    together = _sample(model, reuse, steps=10)
    assert torch.equal(together, _sample(model, reuse, steps=10))
    alone = torch.cat([_sample(model, reuse, seeds=(s,), steps=10) for s in (0, 1, 2)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_adaptive_threshold_trades_evaluations():
    model = _model()
    counts = []
    for threshold in (0.0, 0.05, 0.5, 1e9):
        net = inference_network(model)
        _sample(net, Reuse("adaptive", threshold=threshold), seeds=(0,), steps=12)
        counts.append(len(net.batches))
    assert counts[0] == 12 and counts[-1] == 1 and counts == sorted(counts, reverse=True)


def test_heun_schedules_by_grid_time():
    net = inference_network(_model())
    # Heun evaluates at t_0, then twice at t_1 .. t_4 (corrector, next predictor), once more at t_5
    _sample(net, Reuse("every", every=2), seeds=(0,), steps=6, solver="heun")
    assert len(net.batches) == 1 + 2 + 2  # grid indices 0, 2, 4


@pytest.mark.parametrize("spec", ["every:0", "every:-1", "steps:", "steps:-1,2", "adaptive:-0.1", "adaptive:nan",
                                  "adaptive:inf", "sometimes", "every:x", "adaptive", "first-block:-1",
                                  "first-block:nan", "first-block"])
def test_unreadable_or_never_recomputing_schedules_are_refused(spec):
    with pytest.raises(ValueError) as e:
        parse_reuse(spec)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("changes, why", [
    ({"reuse": "steps:0,60"}, "out of range"), ({"reuse": "every:50"}, "never recomputes"),
    ({"reuse": "steps:0"}, "never recomputes"), ({"reuse": "every:2", "solver": "odeint"}, "fixed-grid"),
])
def test_sample_config_refuses_schedules_that_do_not_fit_the_sampler(changes, why):
    with pytest.raises(ConfigError, match=why):
        SampleConfig(**{"steps": 50, **changes})
    assert SampleConfig(steps=50, reuse="steps:0,49").reuse_schedule == Reuse("steps", steps=(0, 49))
    assert math.isclose(parse_reuse("adaptive:0.25").threshold, 0.25) and parse_reuse("off") is None
    assert parse_reuse("first-block:0.1") == Reuse("first-block", threshold=0.1) and \
        parse_reuse(Reuse("first-block", threshold=0.1).spec).spec == "first-block:0.1"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from pixdiff.checkpoints import store

    sd = _model().state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    store.save({"recipe": to_dict(R), "model": sd, "ema": sd}, path)
    return path


def test_cli_samples_with_reuse_and_refuses_bad_schedules(ckpt, tmp_path):
    from pixdiff.data.npz import load_images, load_meta

    def run(out, *extra):
        return cli("sample", str(ckpt), "--out", str(tmp_path / out), "--num", "2", "--steps", "4", "--device", "cpu",
                   *extra)

    assert run("plain").returncode == 0 and run("reused", "--reuse", "every:2").returncode == 0
    assert run("first", "--reuse", "first-block:0.05").returncode == 0
    assert load_meta(tmp_path / "reused" / "samples.npz")["reuse"] == "every:2"
    assert not np.array_equal(load_images(tmp_path / "plain" / "samples.npz"),
                              load_images(tmp_path / "reused" / "samples.npz"))
    for extra in (["--reuse", "every:0"], ["--reuse", "steps:0,9"], ["--reuse", "adaptive:nan"], ["--reuse", "first-block:inf"],
                  ["--reuse", "every:2", "--solver", "odeint"]):
        res = run("bad", *extra)
        assert res.returncode == 2, (extra, res.stderr)
        assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / "bad").exists()
    res = cli("bench", "latency", "emoji_tiny", "--reuse", "adaptive:-1", "--device", "cpu")
    assert res.returncode == 2 and "Traceback" not in res.stderr
