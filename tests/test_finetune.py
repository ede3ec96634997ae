"""Unconditional models (num_classes = 0) and fine-tuning a trained model to new classes."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pixdiff.checkpoints import store as checkpoint
from pixdiff.cli import app
from pixdiff.recipe import load_recipe
from pixdiff.runtime.distributed import Dist
from pixdiff.train import Trainer, train
from pixdiff.train.finetune import LABEL_TABLE, transfer

TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=4", "train.sample_every=0",
        "train.max_steps=2", "train.log_every=1"]


def images(folder: Path, classes: list[str], per_class: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / c / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-step run of the tiny emoji model (9 classes)."""
    tmp = tmp_path_factory.mktemp("source")
    recipe = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={tmp / 'cache'}"])
    return train(recipe, tmp / "run", device="cpu", progress=False).checkpoint


def test_transfer_keeps_every_weight_but_the_new_class_rows():
    old = {"w": torch.randn(3, 2), LABEL_TABLE: torch.randn(10, 4)}  # 9 classes + null
    fresh = {"w": torch.zeros(3, 2), LABEL_TABLE: torch.zeros(4, 4)}  # 3 classes + null
    kept = transfer(old, fresh)
    assert torch.equal(kept["w"], old["w"]) and torch.equal(kept[LABEL_TABLE][:3], old[LABEL_TABLE][:3])
    assert torch.equal(kept[LABEL_TABLE][3], old[LABEL_TABLE][-1])  # the null row moves to the end
    grown = transfer(old, {"w": fresh["w"], LABEL_TABLE: torch.zeros(13, 4)})
    assert torch.equal(grown[LABEL_TABLE][:9], old[LABEL_TABLE][:9]) and not grown[LABEL_TABLE][9:12].any()
    replaced = transfer(old, fresh, keep_classes=False)
    assert not replaced[LABEL_TABLE][:3].any() and torch.equal(replaced[LABEL_TABLE][3], old[LABEL_TABLE][-1])
    with pytest.raises(ValueError, match="shape mismatch"):
        transfer(old, {"w": torch.zeros(2, 2), LABEL_TABLE: fresh[LABEL_TABLE]})


def test_fine_tuning_starts_from_every_non_label_weight_of_the_source(source, tmp_path):
    data = images(tmp_path / "data", ["a", "b", "c"])
    recipe = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={tmp_path / 'cache'}", f"data.source={data}",
                                        "model.backbone.num_classes=3"])
    src = checkpoint.load(source)["ema"]
    trainer = Trainer(recipe, tmp_path / "ft", Dist(), progress=False, init_from=source)
    with trainer:
        state = trainer.parts.net.model.state_dict()
        emas = trainer.parts.emas[0]
        assert set(state) == set(src)
        for k in src:
            if k != LABEL_TABLE:
                assert torch.equal(state[k], src[k]), k
        table = state[LABEL_TABLE]  # (4, D): classes 0-2 kept, the null row moved to 3
        assert table.shape[0] == 4 and torch.equal(table[:3], src[LABEL_TABLE][:3])
        assert torch.equal(table[3], src[LABEL_TABLE][9])
        for (name, _), e in zip(trainer.parts.net.model.named_parameters(), emas):
            assert torch.equal(e, state[name].float()), name


def cli(*args: str) -> SimpleNamespace:
    """In process (torch is imported once); a traceback would surface as the exception."""
    res = CliRunner().invoke(app, [*args, "--device", "cpu"])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def test_fine_tune_cli_runs_and_resumes(source, tmp_path):
    data = images(tmp_path / "data", ["a", "b", "c"])
    sets = [a for s in [*TINY, f"data.cache_dir={tmp_path / 'cache'}", f"data.source={data}",
                        "model.backbone.num_classes=3"] for a in ("--set", s)]
    out = str(tmp_path / "ft")
    res = cli("train", "emoji_tiny", *sets, "--init-from", str(source.parent.parent), "--out", out, "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    res = cli("train", "emoji_tiny", *sets, "--set", "train.max_steps=3", "--init-from", str(source), "--out", out,
              "--resume", "--no-progress")
    assert res.returncode == 0 and "trained steps 2-3 (1 this session)" in res.stdout, res.stderr[-2000:]
    bad = cli("train", "emoji_tiny", *sets, "--set", "model.backbone.dim=64", "--init-from", str(source),
              "--out", str(tmp_path / "bad"), "--no-progress")
    assert bad.returncode == 2 and "shape mismatch" in bad.stderr and "Traceback" not in bad.stderr


def test_unconditional_recipe_trains_on_a_flat_folder_and_samples(tmp_path):
    flat = tmp_path / "mine"
    images(tmp_path, ["mine"], per_class=5)
    sets = [a for s in [*TINY, f"data.cache_dir={tmp_path / 'cache'}", f"data.source={flat}", "train.sample_every=2",
                        "sample.steps=2", "sample.grid_images=4"] for a in ("--set", s)]
    res = cli("train", "emoji_tiny:uncond", *sets, "--out", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = checkpoint.load(checkpoint.resolve(tmp_path / "run"))
    assert ckpt["ema"][LABEL_TABLE].shape[0] == 1  # the null row only
    res = cli("sample", str(tmp_path / "run"), "--out", str(tmp_path / "s"), "-n", "3", "--steps", "2", "--cfg", "4")
    assert res.returncode == 0, res.stderr[-2000:]
    res = cli("edit", str(tmp_path / "run"), str(flat / "0.png"), "--out", str(tmp_path / "e"), "--class", "0")
    assert res.returncode == 2 and "unconditional" in res.stderr


def test_unconditional_guidance_is_the_plain_model():
    from pixdiff.diffusion.guidance import cfg

    calls = []

    def model(x, t, y):
        calls.append(len(x))
        return x * 2

    x = torch.randn(3, 1, 2, 2)
    out = cfg(model, 4.0, num_classes=0)(x, torch.full((3,), 0.5), torch.zeros(3, dtype=torch.long))
    assert torch.equal(out, x * 2) and calls == [3]
