"""hf-hub: sources, offline, from a hub cache the tests build (the layout huggingface_hub reads:
models--ORG--REPO/{refs/REV, snapshots/COMMIT/FILE -> blobs/SHA256}), holding synthetic mirrors of
each released format: a pixdiff export, JiT's .pth (args Namespace, model / model_ema1 / model_ema2
under `net.`), the Lightning .ckpt of DiP, PixNerd, DeCo and PixelDiT (trainer keys, `denoiser.` /
`ema_denoiser.`, the REPA projector under `diffusion_trainer.`), and the diffusers folder of
Bili-Sakura/PixNerd-diffusers (transformer/diffusion_pytorch_model.safetensors, both prefixes)."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import sys
from dataclasses import replace as dc_replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from pixdiff.checkpoints import hub, layouts, loader, store
from pixdiff.checkpoints.layouts import LAYOUTS, layout_of
from pixdiff.cli import app
from pixdiff.recipe import load_recipe

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RECIPES = {"dip": "emoji_tiny", "jit": "jit:tiny", "pixnerd": "pixnerd:tiny", "deco": "deco:tiny",
           "pixeldit": "pixeldit:tiny"}


def cli(*args: str) -> SimpleNamespace:
    res = CliRunner().invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An offline hub cache and pixdiff cache home under tmp_path."""
    import huggingface_hub.constants as constants

    root = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIXDIFF_CACHE_DIR", str(tmp_path / "pixdiff-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))  # read by huggingface_hub at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return root


def publish(root: Path, repo: str, files: dict[str, bytes], revision: str = "main", commit: str = COMMIT) -> None:
    """Files as `hf_hub_download` leaves them: content-addressed blobs, a snapshot of links, a ref."""
    folder = root / f"models--{repo.replace('/', '--')}"
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / revision).write_text(commit)


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def weights(spec: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: 0.02 * torch.randn_like(v) for k, v in load_recipe(spec).model.build().state_dict().items()}


def lightning(layout: str) -> dict:
    """A Lightning checkpoint as the authors' trainers write it, the raw and EMA weights differing."""
    r = load_recipe(RECIPES[layout])
    raw, ema = weights(RECIPES[layout], 0), weights(RECIPES[layout], 1)
    state = LAYOUTS[layout].to_official({"model": raw, "ema": ema, "ema_extra": {}}, r)["state_dict"]
    state["diffusion_trainer.proj.0.0.weight"] = torch.zeros(2, 2)  # REPA projector: not the model's
    return {"epoch": 319, "global_step": 1600000, "pytorch-lightning_version": "2.5.0", "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 320}}}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": []}]}],
            "lr_schedulers": []}


def jit_pth(extra=None) -> dict:
    r = load_recipe("jit:tiny")
    raw, ema = weights("jit:tiny", 0), weights("jit:tiny", 1)
    official = LAYOUTS["jit"].to_official({"model": raw, "ema": ema, "ema_extra": {}}, r)
    args = argparse.Namespace(model="JiT-B/16", img_size=32, noise_scale=1.0, ema_decay1=0.9999, interval=[0.1, 1.0])
    return {**official, "optimizer": {"state": {}, "param_groups": []}, "epoch": 599, "args": args, **(extra or {})}


def sample(source: str, out: Path, *extra: str) -> SimpleNamespace:
    return cli("sample", source, "--out", str(out), "--num", "2", "--steps", "2", "--device", "cpu", "--quiet", *extra)


def images(out: Path) -> np.ndarray:
    arr = np.load(out / "samples.npz")["arr_0"]
    assert arr.shape[0] == 2 and arr.std() > 0  # not constant
    return arr


# ------------------------------------------------------------------ pure parts
def test_parse_spells_repo_revision_and_file():
    assert hub.parse("hf-hub:org/repo") == hub.HubSource("org/repo")
    assert hub.parse("hf-hub:org/re.po@v1.0:sub/dir/x.ckpt") == hub.HubSource("org/re.po", "v1.0", "sub/dir/x.ckpt")
    assert str(hub.parse("hf-hub:org/repo@abc:m.pt")) == "hf-hub:org/repo@abc:m.pt"
    for bad in ("hf-hub:repo", "hf-hub:org/repo@", "hf-hub:org/repo:", "hf-hub:a/b/c", "hf-hub:"):
        with pytest.raises(store.CheckpointError, match="not a hub source"):
            hub.parse(bad)


def test_choose_prefers_model_safetensors_then_diffusers_then_the_only_file():
    src = hub.HubSource("o/r")
    assert hub.choose(["README.md", "a.pt", "model.safetensors"], None, src) == "model.safetensors"
    diffusers = ["XL/model_index.json", "XL/transformer/config.json", "XL/transformer/diffusion_pytorch_model.safetensors"]
    assert hub.choose(diffusers, "XL", src) == "XL/transformer/diffusion_pytorch_model.safetensors"
    assert hub.choose(["README.md", "sub/x.ckpt", "ep320.ckpt"], None, src) == "ep320.ckpt"
    with pytest.raises(store.CheckpointError, match="several checkpoint files: a.pt, b.ckpt"):
        hub.choose(["a.pt", "b.ckpt"], None, src)
    with pytest.raises(store.CheckpointError, match="no checkpoint file"):
        hub.choose(["README.md"], None, src)


@pytest.mark.parametrize("layout", sorted(RECIPES))
def test_layout_of_reads_each_official_file_from_its_key_names(layout):
    ckpt = jit_pth() if layout == "jit" else lightning(layout)
    state = ckpt.get("state_dict", {})
    assert layout_of([*ckpt, *state]) == layout
    if layout != "jit":  # a bare denoiser state dict, as DiP's reference code also saves
        bare = {k.removeprefix("ema_denoiser."): v for k, v in state.items() if k.startswith("ema_denoiser.")}
        assert layout_of(bare) == layout


def test_layout_of_is_none_for_unknown_or_mixed_names():
    assert layout_of(["state_dict", "weight", "bias"]) is None
    assert layout_of(["denoiser.local_decoder.x", "denoiser.dec_net.y"]) is None
    assert layout_of(["model", "model_ema1"]) is None  # JiT's needs all three


# ------------------------------------------------------------------ end to end, offline
def test_a_pixdiff_export_samples_from_the_hub_and_equals_the_local_file(cache, tmp_path):
    r = load_recipe("emoji_tiny")
    local = tmp_path / "model.safetensors"
    store.save_safetensors(weights("emoji_tiny"), r, local)
    publish(cache, "org/tiny", {"model.safetensors": local.read_bytes(), "README.md": b"# tiny"})
    done = sample("hf-hub:org/tiny", tmp_path / "hub")
    assert done.returncode == 0, done.stderr
    assert sample(str(local), tmp_path / "local").returncode == 0
    assert np.array_equal(images(tmp_path / "hub"), images(tmp_path / "local"))
    run = __import__("pixdiff").load("hf-hub:org/tiny")  # pixdiff.load takes the same source
    assert run.recipe.name == r.name


@pytest.mark.parametrize("layout", sorted(RECIPES))
def test_each_official_format_samples_from_the_hub_and_is_converted_once(cache, tmp_path, monkeypatch, layout):
    name = "checkpoint-last.pth" if layout == "jit" else "epoch=319-step=1600000.ckpt"
    ckpt = jit_pth() if layout == "jit" else lightning(layout)
    publish(cache, f"org/{layout}", {name: torch_bytes(ckpt), "README.md": b"x"})
    spec = f"hf-hub:org/{layout}"
    done = sample(spec, tmp_path / "a", "--recipe", RECIPES[layout])  # no --layout: told from the keys
    assert done.returncode == 0, done.stderr
    kept = list((tmp_path / "pixdiff-cache" / "converted").glob("*.pt"))
    assert len(kept) == 1 and hashlib.sha256(torch_bytes(ckpt)).hexdigest()[:32] in kept[0].name
    converted = store.load(kept[0])
    ema = converted["ema"]
    model, _, _ = loader.load_model(spec, recipe=RECIPES[layout], weights="raw")
    assert any(not torch.equal(model.state_dict()[k], ema[k]) for k in ema)  # raw and EMA both kept

    def no_conversion(*_):
        raise AssertionError("converted again")

    monkeypatch.setitem(layouts.LAYOUTS, layout, dc_replace(LAYOUTS[layout], to_pixdiff=no_conversion))
    again = sample(spec, tmp_path / "b", "--recipe", RECIPES[layout])
    assert again.returncode == 0, again.stderr
    assert np.array_equal(images(tmp_path / "a"), images(tmp_path / "b"))


def test_the_diffusers_folder_of_pixnerd_diffusers_samples_from_a_subfolder(cache, tmp_path):
    state = lightning("pixnerd")["state_dict"]
    ema = {k: v for k, v in state.items() if k.startswith("ema_denoiser.")}
    both = {**ema, **{k.replace("ema_denoiser.", "denoiser.", 1): v.clone() for k, v in ema.items()}}  # its converter's
    files = {"XL-256/model_index.json": b"{}", "XL-256/transformer/config.json": json.dumps({"use_ema": True}).encode(),
             "XL-256/transformer/diffusion_pytorch_model.safetensors": st_save(both, metadata={"format": "pt"}),
             "XL-256/vae/config.json": b"{}"}
    publish(cache, "org/pixnerd-diffusers", files)
    done = sample("hf-hub:org/pixnerd-diffusers:XL-256", tmp_path / "d", "--recipe", "pixnerd:tiny")
    assert done.returncode == 0, done.stderr
    images(tmp_path / "d")


def test_a_revision_pins_the_snapshot(cache, tmp_path):
    r = load_recipe("emoji_tiny")
    for seed, (rev, commit) in enumerate([("main", COMMIT), ("v1", "f" * 40)]):
        path = tmp_path / f"{rev}.safetensors"
        store.save_safetensors(weights("emoji_tiny", seed), r, path)
        publish(cache, "org/tiny", {"model.safetensors": path.read_bytes()}, revision=rev, commit=commit)
    a, _, _ = loader.load_model("hf-hub:org/tiny")
    b, _, _ = loader.load_model("hf-hub:org/tiny@v1")
    c, _, _ = loader.load_model(f"hf-hub:org/tiny@{'f' * 40}:model.safetensors")
    key = next(iter(a.state_dict()))
    assert not torch.equal(a.state_dict()[key], b.state_dict()[key]) and torch.equal(b.state_dict()[key],
                                                                                         c.state_dict()[key])


# ------------------------------------------------------------------ refusals: one line, exit 2, nothing written
def refused(done: SimpleNamespace, out: Path, *needles: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = done.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line, line
    assert all(n in line for n in needles), line
    assert not out.exists()


def test_unknown_repo_file_and_ambiguous_repo_are_one_line(cache, tmp_path):
    out = tmp_path / "out"
    refused(sample("hf-hub:org/nothing", out), out, "hf-hub:org/nothing", "not in the local hub cache", "HF_HUB_OFFLINE")
    publish(cache, "org/two", {"a.pt": b"x", "b.ckpt": b"y"})
    refused(sample("hf-hub:org/two:c.pt", out), out, "hf-hub:org/two:c.pt", "not in the local hub cache")
    refused(sample("hf-hub:org/two", out), out, "several checkpoint files: a.pt, b.ckpt", "hf-hub:org/two:FILE")
    refused(sample("hf-hub:org", out), out, "not a hub source")


@pytest.mark.parametrize(("extra", "name"), [(datetime.date(2025, 1, 1), "datetime.date"),
                                             (np.float64(1.93), "numpy")])
def test_a_pickled_type_beyond_the_allow_list_is_refused_by_name(cache, tmp_path, extra, name):
    publish(cache, "org/jit", {"checkpoint-last.pth": torch_bytes(jit_pth({"fid": extra}))})
    out = tmp_path / "out"
    refused(sample("hf-hub:org/jit", out, "--recipe", "jit:tiny"), out, f"holds a pickled {name}", "refused")
    assert not (tmp_path / "pixdiff-cache" / "converted").exists()


def test_keys_of_no_layout_ask_for_one(cache, tmp_path):
    publish(cache, "org/odd", {"weights.pt": torch_bytes({"state_dict": {"encoder.w": torch.zeros(1)}})})
    out = tmp_path / "out"
    refused(sample("hf-hub:org/odd", out, "--recipe", "jit:tiny"), out, "match no official layout", "--layout")


def test_without_huggingface_hub_the_error_names_the_extra(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    out = tmp_path / "out"
    refused(sample("hf-hub:org/tiny", out), out, "pip install 'pixdiff[hub]'")


def test_convert_edit_and_init_from_take_hub_sources(cache, tmp_path):
    publish(cache, "org/jit", {"checkpoint-last.pth": torch_bytes(jit_pth())})
    ours = tmp_path / "ours.pt"
    done = cli("convert", "hf-hub:org/jit", str(ours), "--recipe", "jit:tiny")
    assert done.returncode == 0, done.stderr
    ckpt = store.load(ours)
    publish(cache, "org/mine", {"model.pt": ours.read_bytes()})
    size = load_recipe("jit:tiny").resolution
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    done = cli("edit", "hf-hub:org/mine", str(tmp_path / "grey.png"), "--out", str(tmp_path / "e"), "--steps", "2",
               "--device", "cpu")
    assert done.returncode == 0, done.stderr
    state = loader.pick_weights(loader.open_checkpoint("hf-hub:org/mine")[0], load_recipe("jit:tiny"))
    assert all(torch.equal(state[k], ckpt["ema"][k]) for k in state)


def test_file_digest_is_the_sha256_read_off_a_blob_or_computed(cache, tmp_path):
    data = b"weights"
    plain = tmp_path / "w.pt"
    plain.write_bytes(data)
    publish(cache, "org/w", {"w.pt": data})
    linked = next(cache.glob("models--org--w/snapshots/*/w.pt"))
    assert hub.file_digest(plain) == hub.file_digest(linked) == hashlib.sha256(data).hexdigest()


def test_an_unreachable_hub_is_one_line(cache, tmp_path, monkeypatch):
    """Online mode without a network: the transport's error (httpx's ConnectError, a TransportError) is one line."""
    import huggingface_hub

    class TransportError(Exception):
        pass

    class ConnectError(TransportError):
        pass

    def unreachable(*args, **kwargs):
        raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "list_repo_files", unreachable)
    out = tmp_path / "out"
    refused(sample("hf-hub:org/missing", out), out, "cannot reach the Hub (ConnectError", "HF_HUB_OFFLINE=1")
