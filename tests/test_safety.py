"""Nothing a file holds runs code, and bad configs stop in one line before any work.

Poisoned files (a recipe naming `subprocess:run`, which passes `torch.load(weights_only=True)`; a
real pickle payload; random bytes; a truncated file) are planted as checkpoint files and in run
folders; every command that reads them must exit 2 with one `error:` line, touch no marker file
and write nothing."""

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pixdiff.checkpoints import store as checkpoint
from pixdiff.cli import app
from pixdiff.config.tree import DecodeError, OverrideError, apply_overrides, from_dict, leaf_keys, to_dict
from pixdiff.diffusion.solvers import SOLVERS
from pixdiff.nn.model import ModelConfig
from pixdiff.recipe import RecipeError, TrainConfig, load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.sample_every=0"]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


class Payload:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return subprocess.run, (["touch", str(self.marker)],)


def recipe_payload(marker: Path) -> dict:
    return {"_type": "subprocess:run", "args": ["touch", str(marker)]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A valid tiny checkpoint, the poisoned files and run folders, and the marker they would touch."""
    root = tmp_path_factory.mktemp("safety")
    marker = root / "MARKER"
    r = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={root / 'cache'}"])
    torch.manual_seed(0)
    sd = r.model.build().state_dict()
    good = {"recipe": to_dict(r), "model": sd, "ema": sd}
    checkpoint.save(good, root / "good.pt")
    files = root / "files"
    checkpoint.save({**good, "recipe": recipe_payload(marker)}, files / "recipe_payload.pt")
    checkpoint.save({**good, "recipe": {**to_dict(r), "model": {**to_dict(r.model), "head": recipe_payload(marker)}}},
                    files / "nested_payload.pt")
    torch.save({"format": checkpoint.FORMAT, "recipe": Payload(marker), "ema": sd}, files / "pickle_payload.pt")
    (files / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    blob = (root / "good.pt").read_bytes()
    (files / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, files / "payload.safetensors",
              metadata={"format": checkpoint.FORMAT, "recipe": json.dumps(recipe_payload(marker))})
    runs = root / "runs"
    for name, recipe_json, ckpt_file in [("recipe_json", recipe_payload(marker), root / "good.pt"),
                                         *[(f.stem, to_dict(r), f) for f in sorted(files.glob("*.pt"))]]:
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "recipe.json").write_text(json.dumps(recipe_json))
        (runs / name / "checkpoints" / "step_00000001.pt").write_bytes(ckpt_file.read_bytes())
    return {"root": root, "marker": marker, "recipe": r, "files": sorted(files.iterdir()),
            "runs": sorted(runs.iterdir())}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(args: list[str], world: dict, watched: Path) -> None:
    """The command exits 2 with one `error:` line, runs nothing and writes nothing under `watched`."""
    before = snapshot(watched)
    res = CliRunner().invoke(app, args)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, (args, res.exit_code, res.stderr, res.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert not world["marker"].exists()
    assert snapshot(watched) == before


def test_the_payloads_are_live(world, tmp_path):
    """The planted files would run code through a careless loader (so the tests below can fail)."""
    marker = tmp_path / "m"
    torch.save({"x": Payload(marker)}, tmp_path / "p.pt")
    torch.load(tmp_path / "p.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    stored = torch.load(world["root"] / "files" / "recipe_payload.pt", weights_only=True)["recipe"]
    module, _, name = stored["_type"].partition(":")  # what the old decoder did with it
    getattr(__import__(module), name)(**{k: v for k, v in stored.items() if k != "_type"})
    assert world["marker"].exists()
    world["marker"].unlink()


@pytest.mark.parametrize("kind", ["recipe_payload", "nested_payload", "pickle_payload", "random", "truncated",
                                  "payload.safetensors"])
def test_poisoned_checkpoint_files_are_refused(world, kind, tmp_path):
    file = next(f for f in world["files"] if f.stem == kind or f.name == kind)
    out = tmp_path / "out"
    refused(["sample", str(file), "--out", str(out), "--num", "2", "--steps", "2", "--device", "cpu"], world, tmp_path)
    for to, dst in (("reference", "ref.pt"), ("safetensors", "w.safetensors")):
        refused(["convert", str(file), str(out / dst), "--to", to], world, tmp_path)
    refused(["convert", str(file), str(out / "conv.pt"), "--recipe", "emoji_tiny", *sets(TINY)], world, tmp_path)
    refused(["eval", str(file), "--ref", str(file), "--device", "cpu"], world, tmp_path)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["recipe_json", "recipe_payload", "nested_payload", "pickle_payload", "random",
                                  "truncated"])
def test_poisoned_run_folders_are_refused(world, kind, tmp_path):
    run = next(r for r in world["runs"] if r.name == kind)
    refused(["sample", str(run), "--out", str(tmp_path / "out"), "--device", "cpu"], world, run)
    refused(["convert", str(run), str(tmp_path / "out" / "ref.pt"), "--to", "reference"], world, run)
    refused(["train", "emoji_tiny", "--out", str(run), "--resume", "--no-progress", "--device", "cpu",
             *sets([*TINY, f"data.cache_dir={world['root'] / 'cache'}"])], world, run)
    assert not (tmp_path / "out").exists()


def test_real_cli_refuses_a_payload_checkpoint_in_one_line(world, tmp_path):
    """The same through `python -m pixdiff.cli` (no in-process test harness)."""
    run = next(r for r in world["runs"] if r.name == "recipe_json")
    res = subprocess.run([sys.executable, "-m", "pixdiff.cli", "sample", str(run), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "subprocess:run" in res.stderr and not world["marker"].exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the decoder itself
@pytest.mark.parametrize("stored, message", [
    ({"_type": "os:system", "command": "true"}, "refusing _type 'os:system'"),
    ({"_type": "pixdiff.checkpoints.store:save", "obj": {}}, "refusing"),  # a pixdiff function, not a config class
    ({"_type": "pixdiff.config.plugins:Path"}, "refusing"),  # a class, not a dataclass
    ({"_type": "pixdiff.recipe:__builtins__.eval"}, "refusing"),
    ({"_type": "pixdiff.recipe:NoSuchClass"}, "does not exist"),
    ({"_type": "pixdiff.heads.unet:ConvUNet", "depth": 2, "shell": "rm"}, "has no field named shell"),
    ({"_type": "pixdiff.heads.unet:ConvUNet", "depth": {"a": 1}}, "must be a config with a _type"),
    ({"_type": "pixdiff.heads.unet:ConvUNet", "depth": torch.zeros(2)}, "unexpected Tensor value"),
    ({"_type": "pixdiff.heads.unet:ConvUNet", "depth": 0}, "recipe.depth=0: must be > 0"),
    (["x", {"_type": "builtins:print"}], r"recipe\[1\]: refusing"),
])
def test_from_dict_builds_only_known_config_classes(stored, message):
    with pytest.raises(DecodeError, match=message) as err:
        from_dict(stored)
    assert "\n" not in str(err.value)


def test_files_written_before_the_layered_layout_still_decode():
    # 0.1.0 recorded heads as pixdiff.heads.*, objectives as pixdiff.objectives, ...
    from pixdiff.diffusion.objectives import FlowMatching
    from pixdiff.nn.heads.unet import ConvUNet

    assert from_dict({"_type": "pixdiff.heads.unet:ConvUNet", "depth": 2}) == ConvUNet(depth=2)
    assert from_dict({"_type": "pixdiff.objectives:FlowMatching"}) == FlowMatching()
    with pytest.raises(DecodeError, match="refusing"):  # the alias table maps names, it allows nothing new
        from_dict({"_type": "pixdiff.objectives:__builtins__.eval"})


def test_a_module_is_refused_before_it_is_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DecodeError, match="evilmod"):
        from_dict({"_type": "evilmod:Anything"})
    assert not marker.exists() and "evilmod" not in sys.modules


def test_plugin_config_classes_round_trip():
    r = load_recipe("plugin:dip_xl16_film")
    stored = json.loads(json.dumps(to_dict(r)))
    assert stored["model"]["head"]["_type"].startswith("pixdiff_local_plugins.")
    assert from_dict(stored) == r


# ------------------------------------------------------------------ safetensors and convert
def test_safetensors_export_samples_like_the_checkpoint(world, tmp_path):
    runner = CliRunner()
    st_file = tmp_path / "w.safetensors"
    res = runner.invoke(app, ["convert", str(world["root"] / "good.pt"), str(st_file), "--to", "safetensors"])
    assert res.exit_code == 0, res.stderr
    from safetensors import safe_open

    with safe_open(st_file, framework="pt") as f:
        assert json.loads(f.metadata()["recipe"]) == to_dict(world["recipe"])
    images = []
    for src in (world["root"] / "good.pt", st_file):
        out = tmp_path / src.suffix.strip(".")
        res = runner.invoke(app, ["sample", str(src), "--out", str(out), "--num", "3", "--steps", "2",
                                  "--device", "cpu"])
        assert res.exit_code == 0, res.stderr
        images.append(np.load(out / "samples.npz")["arr_0"])
    np.testing.assert_array_equal(images[0], images[1])
    refused(["sample", str(st_file), "--out", str(tmp_path / "raw"), "--weights", "raw"], world, tmp_path)


@pytest.mark.parametrize("weights", [{}, {"backbone.extra": torch.zeros(1)}])
def test_convert_to_reference_refuses_weights_that_do_not_fit(world, weights, tmp_path):
    src = tmp_path / "bad.pt"
    checkpoint.save({"recipe": to_dict(world["recipe"]), "model": weights, "ema": weights}, src)
    refused(["convert", str(src), str(tmp_path / "out" / "ref.pt"), "--to", "reference"], world, tmp_path)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ validation at construction
@pytest.mark.parametrize("override, message", [
    ("train.log_every=0", "train.log_every=0: must be > 0"),
    ("train.grad_accum=0", "train.grad_accum=0: must be > 0"),
    ("train.global_batch=0", "train.global_batch=0: must be > 0"),
    ("train.max_steps=-5", "train.max_steps=-5: must be > 0"),
    ("train.precision=fp16", "train.precision='fp16': fp16 needs loss scaling"),
    ("train.parallel=zero3", "train.parallel='zero3': not one of"),
    ("sample.solver=rk45", "sample.solver='rk45': unknown solver; choose one of euler, heun"),
    ("model.head.depth=4", "model.head.depth=4: patch size 8 cannot be halved"),
    ("train.global_batch=10", "train.global_batch=10: must be divisible by train.grad_accum=4"),
])
def test_known_bad_values_fail_in_one_line(override, message):
    base = ["train.grad_accum=4"] if "divisible" in message else []
    with pytest.raises(OverrideError, match=message) as err:
        load_recipe("emoji_tiny", [*base, override])
    assert "\n" not in str(err.value)


def test_constructors_validate_without_overrides(tmp_path):
    with pytest.raises(ValueError, match="GradScaler"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="TrainConfig.parallel='zero3'"):
        TrainConfig(parallel="zero3")
    with pytest.raises(ValueError, match="TrainConfig.log_every=True: expected int"):
        TrainConfig(log_every=True)  # a bool is not an int
    from pixdiff.nn.backbone import DiTConfig
    from pixdiff.nn.heads.unet import ConvUNet

    with pytest.raises(ValueError, match="ModelConfig.head.depth=3: patch size 4 cannot be halved"):
        ModelConfig(backbone=DiTConfig(patch_size=4, image_size=32, dim=64, num_heads=4), head=ConvUNet(depth=3))
    recipe = tmp_path / "bad.py"
    recipe.write_text("from pixdiff.recipe import Recipe, TrainConfig\n"
                      "def build():\n    return Recipe(name='bad', train=TrainConfig(lr=-1.0))\n")
    with pytest.raises(RecipeError, match="TrainConfig.lr=-1.0: must be > 0"):
        load_recipe(str(recipe))


def test_overrides_validate_the_final_combination():
    # each alone would make an invalid intermediate config (dim 96 / 16 heads; REPA block 7 of 4)
    r = load_recipe("dip_xl16", ["model.backbone.dim=96", "model.backbone.num_heads=3"])
    assert (r.model.backbone.dim, r.model.backbone.num_heads) == (96, 3)
    r = load_recipe("emoji_tiny", ["train.repa.encoder=enc.pt", "train.repa.block=1"])
    assert r.train.repa.block == 1


def _bases() -> list:
    """Recipes that between them hold every config class: each head, each objective, both placements."""
    from pixdiff.diffusion.objectives import DDPM, FlowMatching
    from pixdiff.nn.heads.coord_mlp import CoordinateMLP
    from pixdiff.nn.heads.final_layer import DiTFinalLayer
    from pixdiff.nn.heads.intra_attention import IntraPatchAttention
    from pixdiff.nn.heads.mlp import StandardMLP
    from pixdiff.config import replace

    tiny = load_recipe("emoji_tiny")
    return [tiny, load_recipe("plugin:dip_xl16_film"),
            replace(tiny, **{"model.head": IntraPatchAttention(width=16, depth=1, num_heads=4)}),
            replace(tiny, **{"model.head": StandardMLP(hidden=16, hidden_layers=1), "objective": FlowMatching()}),
            replace(tiny, **{"model.head": CoordinateMLP(hidden=8, mlp_hidden=8, depth=1, num_freqs=2),
                             "model.placement": "intermediate", "model.inject_after": 1}),
            replace(tiny, **{"model.head": DiTFinalLayer(), "objective": DDPM()})]


BASES = _bases()
WRONG_TYPE = {int: ["x", "1.5", "1e3", ""], float: ["nan", "inf", "-inf", "x", ""], bool: ["maybe", "2", ""]}
NOT_POSITIVE_INT, NEGATIVE_INT = st.integers(max_value=0), st.integers(max_value=-1)
NOT_POSITIVE, NEGATIVE = st.floats(max_value=0, allow_nan=False), st.floats(max_value=-1e-9, allow_nan=False)
ABOVE_ONE = st.floats(min_value=1.001, allow_nan=False)
OUT_OF_RANGE = {
    **{f"train.{k}": NOT_POSITIVE_INT for k in ("global_batch", "max_steps", "grad_accum", "log_every", "ckpt_every")},
    **{f"train.{k}": NEGATIVE_INT for k in ("warmup_steps", "seed", "num_workers", "sample_every")},
    "train.lr": NOT_POSITIVE, "train.weight_decay": NEGATIVE, "train.grad_clip": NEGATIVE,
    "train.ema_decays": st.floats(min_value=1, allow_nan=False) | NEGATIVE, "train.min_lr": NEGATIVE,
    "sample.steps": NOT_POSITIVE_INT, "sample.time_shift": NOT_POSITIVE, "sample.cfg_scale": NEGATIVE,
    "sample.grid_images": NEGATIVE_INT, "sample.solver": st.text(max_size=12).filter(lambda t: t.strip() not in SOLVERS),
    **{f"model.backbone.{k}": NOT_POSITIVE_INT for k in ("depth", "dim", "num_heads", "channels",
                                                         "image_size", "freq_dim", "patch_size")},
    "model.backbone.num_classes": NEGATIVE_INT,  # 0: an unconditional model
    "model.backbone.mlp_ratio": NOT_POSITIVE,
    **{f"model.head.{k}": NOT_POSITIVE_INT for k in ("depth", "width", "hidden", "hidden_layers", "mlp_hidden",
                                                     "num_freqs", "num_heads", "expansion")},
    "model.head.kernel_size": NOT_POSITIVE_INT | st.integers(1, 50).map(lambda k: 2 * k),
    "model.head.mlp_ratio": NOT_POSITIVE,
    "model.inject_after": NEGATIVE_INT | st.integers(min_value=3),  # only checked off the "post" placement
    "objective.label_dropout": ABOVE_ONE | NEGATIVE, "objective.scale": NOT_POSITIVE,
    "objective.shift": NOT_POSITIVE, "objective.t_eps": ABOVE_ONE | NOT_POSITIVE,
    "objective.num_steps": st.integers(max_value=1), "objective.beta_start": NOT_POSITIVE | ABOVE_ONE,
    "objective.beta_end": st.floats(max_value=9e-5, allow_nan=False) | st.floats(min_value=1, allow_nan=False),
    "name": st.just(""), "data.source": st.just(""),
}


def _invalid(recipe, key: str) -> st.SearchStrategy[str] | None:
    """Texts that are not a valid value of `key`: of the wrong type, not a choice, or out of range."""
    node = recipe
    *path, name = key.split(".")
    for part in path:
        node = getattr(node, part)
    annotation = typing.get_type_hints(type(node))[name]
    checked = key in OUT_OF_RANGE and (key != "model.inject_after" or recipe.model.placement != "post")
    options = [OUT_OF_RANGE[key].map(str)] if checked else []
    if annotation in WRONG_TYPE:
        options.append(st.sampled_from(WRONG_TYPE[annotation]))
    if typing.get_origin(annotation) is tuple:  # a fixed arity (betas) or any number of items (ema_decays)
        variadic = typing.get_args(annotation)[-1] is Ellipsis
        options.append(st.sampled_from(["a,b", ""] if variadic else ["0.5", "0.1,0.2,0.3", "a,b"]))
    if typing.get_origin(annotation) is typing.Literal:  # newlines and all: the message stays one line
        options.append(st.text(max_size=12).filter(lambda t: t.strip() not in typing.get_args(annotation)))
    return st.one_of(options) if options else None


CASES = [(i, k) for i, r in enumerate(BASES) for k in leaf_keys(r) if _invalid(r, k) is not None]


@settings(deadline=None, max_examples=400)
@given(st.sampled_from(CASES).flatmap(lambda c: st.tuples(st.just(c), _invalid(BASES[c[0]], c[1]))))
def test_any_invalid_value_fails_in_one_line_naming_its_field(case):
    (base, key), text = case
    with pytest.raises(OverrideError) as err:
        apply_overrides(BASES[base], [f"{key}={text}"])
    message = str(err.value)
    assert "\n" not in message
    assert key in message, message


def test_every_config_class_is_covered():
    classes = {type(n).__name__ for r in BASES for n in (r.model.head, r.objective)}
    assert classes >= {"ConvUNet", "FiLMConvHead", "IntraPatchAttention", "StandardMLP", "CoordinateMLP",
                       "DiTFinalLayer", "XPrediction", "FlowMatching", "DDPM"}
    keys = {k for _, k in CASES}
    assert {k for k in OUT_OF_RANGE} <= keys, set(OUT_OF_RANGE) - keys


@pytest.mark.parametrize("command", [
    ["train", "emoji_tiny", "--set", "train.log_every=0"],
    ["train", "emoji_tiny", "--set", "train.precision=fp16"],
    ["info", "emoji_tiny", "--set", "model.head.depth=4"],
    ["bench", "latency", "emoji_tiny", "--set", "sample.solver=rk45"],
])
def test_cli_rejects_bad_values_before_any_work(command, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    extra = ["--out", str(out), "--set", f"data.cache_dir={cache}"] if command[0] == "train" else []
    res = subprocess.run([sys.executable, "-m", "pixdiff.cli", *command, *extra], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("error: ") and command[-1].split("=")[0] in res.stderr
    assert not out.exists() and not cache.exists()


def test_a_stored_recipe_naming_a_repa_factory_imports_nothing_unless_set_again(tmp_path):
    """A run's recipe.json is data: `module:factory` in it would import and call the file's choice."""
    import json
    import sys

    from pixdiff.config.tree import to_dict
    from pixdiff.recipe import RecipeError, load_recipe

    r = load_recipe("emoji_tiny", ["train.repa.encoder=evil_module_xyz:make", "train.repa.block=1"])
    (tmp_path / "recipe.json").write_text(json.dumps(to_dict(r)))
    with pytest.raises(RecipeError, match="never imports code: pass it yourself with --set"):
        load_recipe(str(tmp_path / "recipe.json"))
    assert "evil_module_xyz" not in sys.modules
    again = load_recipe(str(tmp_path), ["train.repa.encoder=evil_module_xyz:make"])  # the user's own choice
    assert again.train.repa.encoder == "evil_module_xyz:make" and "evil_module_xyz" not in sys.modules
