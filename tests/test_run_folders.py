"""Run folders nothing can corrupt: one writer per folder, checksummed checkpoints, resume
checks, every option checked as it is parsed, OS errors in one line, one cache home."""

import errno
import json
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from pixdiff.checkpoints import store as checkpoint
from pixdiff.checkpoints.digest import digest
from pixdiff.cli import app
from pixdiff.config.tree import OverrideError, to_dict
from pixdiff.recipe import load_recipe
from pixdiff.runtime import atomic
from pixdiff.runtime.lock import FolderLocked, folder_lock
from pixdiff.runtime.paths import CacheHomeError, cache_home

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=1",
        "train.sample_every=0", "train.warmup_steps=0", "train.lr=2e-3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def sets(cache: Path, *extra: str) -> list[str]:
    return [a for o in [*TINY, f"data.cache_dir={cache}", *extra] for a in ("--set", o)]


def train(cache: Path, out: Path, *extra: str, resume: bool = False):
    return CliRunner().invoke(app, ["train", "emoji_tiny", "--out", str(out), "--no-progress", "--device", "cpu",
                                    *(["--resume"] if resume else []), *sets(cache, *extra)])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


def one_error_line(res, code: int = 2) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def steps(run: Path) -> list[int]:
    return [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def good(tmp_path_factory, cache) -> Path:
    """A valid tiny checkpoint (random weights)."""
    r = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={cache}"])
    torch.manual_seed(0)
    sd = r.model.build().state_dict()
    path = tmp_path_factory.mktemp("good") / "good.pt"
    checkpoint.save({"recipe": to_dict(r), "model": sd, "ema": sd}, path)
    return path


# ------------------------------------------------------------------ one writer per folder
def test_a_held_lock_refuses_a_second_writer_naming_its_pid(tmp_path):
    run = tmp_path / "run"
    with folder_lock(run):
        with pytest.raises(FolderLocked, match=f"{run} is in use by pid {os.getpid()}"):
            with folder_lock(run):
                pass
    assert not run.exists()  # created for the lock, left empty: removed again
    with folder_lock(run):  # released: free again
        (run / "x").write_text("x")
    assert [p.name for p in run.iterdir()] == ["x"]


def test_the_os_releases_the_lock_of_a_killed_holder(tmp_path):
    run = tmp_path / "run"
    script = (f"import time\nfrom pixdiff.runtime.lock import folder_lock\nwith folder_lock({str(run)!r}):\n"
              "    print('locked', flush=True)\n    time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLocked, match=f"pid {holder.pid}"):
            with folder_lock(run):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(run):  # SIGKILL ran no cleanup: the stale .lock file is there, its lock is not
        pass


def test_train_and_sample_into_a_locked_folder_are_refused_before_writing(cache, good, tmp_path):
    run, out = tmp_path / "run", tmp_path / "samples"
    with folder_lock(run), folder_lock(out):
        before = snapshot(tmp_path)
        line = one_error_line(train(cache, run, "train.max_steps=1"))
        assert str(run) in line and f"pid {os.getpid()}" in line
        res = CliRunner().invoke(app, ["sample", str(good), "--out", str(out), "--num", "2", "--steps", "1",
                                       "--device", "cpu"])
        assert str(out) in one_error_line(res)
        assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ checksummed checkpoints
@settings(deadline=None, max_examples=200)
@given(data=st.binary(min_size=1, max_size=64), start=st.integers(0, 63), new=st.binary(min_size=1, max_size=8))
def test_digest_sees_any_change_of_up_to_8_contiguous_bytes(data, start, new):
    start = start % len(data)
    changed = bytearray(data)
    changed[start:start + len(new)] = new[: len(data) - start]
    as_tensor = lambda b: {"w": torch.frombuffer(bytearray(b), dtype=torch.uint8).clone()}  # noqa: E731
    assert (digest(as_tensor(data)) == digest(as_tensor(bytes(changed)))) == (bytes(changed) == data)


def test_digest_sees_renamed_reshaped_and_non_tensor_changes():
    base = {"model": {"a": torch.arange(6.0), "b": torch.ones(2)}, "step": 3}
    variants = [{"model": {"b": torch.arange(6.0), "a": torch.ones(2)}, "step": 3},
                {"model": {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}, "step": 3},
                {"model": {"a": torch.arange(6.0), "b": torch.ones(2)}, "step": 4},
                {"model": {"a": torch.arange(6.0).double(), "b": torch.ones(2)}, "step": 3}]
    assert len({digest(base), *map(digest, variants)}) == 5
    assert digest(base) == digest({"step": 3, "model": {"b": torch.ones(2), "a": torch.arange(6.0)}})


def overwrite_tensor_bytes(path: Path, marker: torch.Tensor) -> None:
    """Overwrite 8 bytes inside `marker`'s data in the file (as `dd conv=notrunc` would)."""
    blob = bytearray(path.read_bytes())
    at = blob.find(marker.numpy().tobytes())
    assert at > 0
    blob[at + 16:at + 24] = b"\xff" * 8
    path.write_bytes(bytes(blob))


def test_a_damaged_checkpoint_or_export_is_refused_in_one_line(good, tmp_path):
    ckpt = checkpoint.read(good)
    marker = next(v for v in ckpt["model"].values() if v.numel() >= 64)
    damaged = tmp_path / "damaged.pt"
    shutil.copy(good, damaged)
    overwrite_tensor_bytes(damaged, marker)
    with pytest.raises(checkpoint.CheckpointError, match="is damaged"):
        checkpoint.load(damaged)
    assert "damaged" in one_error_line(CliRunner().invoke(app, ["sample", str(damaged), "--out",
                                                                str(tmp_path / "o"), "--device", "cpu"]))
    exported = tmp_path / "w.safetensors"
    assert CliRunner().invoke(app, ["convert", str(good), str(exported), "--to", "safetensors"]).exit_code == 0
    checkpoint.read(exported)  # verifies
    overwrite_tensor_bytes(exported, marker)  # (the fixture's model and EMA weights are the same)
    with pytest.raises(checkpoint.CheckpointError, match="is damaged"):
        checkpoint.read(exported)
    assert not (tmp_path / "o").exists()


def test_a_file_from_before_digests_loads_with_a_one_line_warning(good, tmp_path):
    old = tmp_path / "old.pt"
    data = torch.load(good, weights_only=True)
    del data["digest"]
    torch.save(data, old)
    with pytest.warns(checkpoint.UnverifiedCheckpoint, match="no digest"):
        checkpoint.load(old)
    res = CliRunner().invoke(app, ["sample", str(old), "--quiet", "--out", str(tmp_path / "o"), "--num", "2", "--steps", "1",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.stderr
    assert res.stderr.strip().splitlines() == [f"warning: {old} has no digest (written before pixdiff checked "
                                               "its files): loaded unverified"]


# ------------------------------------------------------------------ resume
def test_resume_skips_a_damaged_newest_checkpoint_and_cuts_the_log_back(cache, tmp_path):
    run = tmp_path / "run"
    assert train(cache, run, "train.max_steps=4", "train.ckpt_every=2").exit_code == 0
    newest = run / "checkpoints" / "step_00000004.pt"
    overwrite_tensor_bytes(newest, next(v for v in checkpoint.read(newest)["model"].values() if v.numel() >= 64))
    res = train(cache, run, "train.max_steps=6", "train.ckpt_every=2", resume=True)
    assert res.exit_code == 0, res.stderr
    assert res.stderr.strip().splitlines() == [f"warning: --resume skipped {newest} is damaged: its content does not "
                                               "match the digest it was written with (a flipped bit or an "
                                               "overwritten byte); refused"]
    assert steps(run) == [1, 2, 3, 4, 5, 6]  # rows 3 and 4 were redone from step 2, not appended
    assert checkpoint.load(newest)["step"] == 4  # rewritten when the resumed run reached it


def test_resume_refuses_a_checkpoint_of_another_recipe_before_loading_it(cache, tmp_path):
    run = tmp_path / "run"
    assert train(cache, run, "train.max_steps=1").exit_code == 0
    other = load_recipe("emoji_tiny", [*TINY, "model.backbone.depth=3"])
    checkpoint.save({"recipe": to_dict(other), "step": 9, "model": {}, "ema": {}},
                    run / "checkpoints" / "step_00000009.pt")
    before = snapshot(run)
    line = one_error_line(train(cache, run, "train.max_steps=12", resume=True))
    assert "cannot change model.backbone.depth 3 -> 2 (from the recipe stored in" in line
    assert "step_00000009.pt" in line
    assert snapshot(run) == before


def test_a_fresh_run_never_appends_to_an_earlier_runs_log(cache, tmp_path):
    logged = tmp_path / "logged"
    logged.mkdir()
    (logged / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert "holds the metrics.jsonl of an earlier run" in one_error_line(train(cache, logged, "train.max_steps=1"))
    assert (logged / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'
    killed = tmp_path / "killed"  # a kill during the first checkpoint's write left only its temp file
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "checkpoints" / ".step_00000002.pt.123.abc.tmp").write_bytes(b"half")
    res = train(cache, killed, "train.max_steps=2")
    assert res.exit_code == 0, res.stderr
    assert steps(killed) == [1, 2] and not list((killed / "checkpoints").glob(".*.tmp"))


# ------------------------------------------------------------------ OS errors
def full_disk_at(monkeypatch, name: str, err: int = errno.ENOSPC) -> None:
    """Writes of `name` (through atomic_write) fail as on a full disk."""
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(err, os.strerror(err))

        def __getattr__(self, attr):
            return getattr(self.f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        return Full(f) if name in str(path) else f

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)


def test_a_full_disk_mid_checkpoint_is_one_line_naming_what_was_kept(cache, tmp_path, monkeypatch):
    run = tmp_path / "run"
    full_disk_at(monkeypatch, "step_00000004")
    line = one_error_line(train(cache, run, "train.max_steps=6", "train.ckpt_every=2"), code=1)
    assert f"{run / 'checkpoints' / 'step_00000004.pt'}: disk full (No space left on device) at step 4" in line
    assert f"last good checkpoint: {run / 'checkpoints' / 'step_00000002.pt'}" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.pt"]  # no temp file left
    checkpoint.load(run / "checkpoints" / "step_00000002.pt")


@pytest.mark.parametrize("err, cause", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_an_unwritable_output_folder_is_one_line(cache, good, tmp_path, monkeypatch, err, cause):
    real = os.open

    def refuse(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(err, os.strerror(err), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert cause in one_error_line(train(cache, tmp_path / "run", "train.max_steps=1"), code=1)
    res = CliRunner().invoke(app, ["sample", str(good), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert cause in one_error_line(res, code=1)
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def test_an_output_path_that_is_a_file_is_one_line(cache, good, tmp_path):
    (tmp_path / "f").write_text("mine")
    assert "a file is in the way" in one_error_line(train(cache, tmp_path / "f", "train.max_steps=1"), code=1)
    res = CliRunner().invoke(app, ["sample", str(good), "--out", str(tmp_path / "f"), "--device", "cpu"])
    assert "a file is in the way" in one_error_line(res, code=1)
    assert (tmp_path / "f").read_text() == "mine"


def test_a_full_disk_in_sample_removes_its_temp_files(good, tmp_path, monkeypatch):
    full_disk_at(monkeypatch, "samples.npz")
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["sample", str(good), "--quiet", "--out", str(out), "--num", "2", "--steps", "1",
                                   "--device", "cpu"])
    assert f"{out / 'samples.npz'}: disk full (No space left on device)" in one_error_line(res, code=1)
    assert not list(out.glob(".*.tmp"))


# ------------------------------------------------------------------ one cache home
def test_one_cache_home(monkeypatch, tmp_path):
    from pixdiff.eval.metrics import default_cache_dir

    monkeypatch.delenv("PIXDIFF_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "xdg" / "pixdiff"
    assert default_cache_dir() == tmp_path / "xdg" / "pixdiff" / "ref-stats"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_home() == tmp_path / "home" / ".cache" / "pixdiff"
    monkeypatch.setenv("PIXDIFF_CACHE_DIR", str(tmp_path / "own"))
    assert cache_home() == tmp_path / "own"
    monkeypatch.setenv("PIXDIFF_CACHE_DIR", " ")
    with pytest.raises(CacheHomeError):
        cache_home()
    monkeypatch.chdir(tmp_path)
    assert "PIXDIFF_CACHE_DIR is set but empty" in one_error_line(
        CliRunner().invoke(app, ["data", "prepare", "emoji", "--resolution", "8"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(OverrideError, match="data.cache_dir='': must name a folder"):
        load_recipe("emoji_tiny", ["data.cache_dir="])


# ------------------------------------------------------------------ every option checked as it is parsed
REQUIRED = {"--out": "out", "--ref": "ref.npz", "--resolution": "8", "--n": "10", "--data": "emoji"}  # valid, required
POSITIONAL = {"convert": ["a.pt", "b.pt"], "sample": ["x.pt"], "eval": ["a.npz"], "data prepare": ["emoji"],
              "data export": ["emoji", "out.npz"], "eval-sanity": ["emoji"], "edit": ["x.pt", "a.png"],
              "inpaint": ["x.pt", "a.png", "m.png"], "invert": ["x.pt", "a.png"],
              "interpolate": ["x.pt"], "eval-readout": ["x.pt"], "sweep": ["x.pt"]}  # (the others take a recipe)


def _options() -> list[tuple[list[str], object]]:
    """(command path, option) for every option of every command that takes a value."""
    found = []

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])
        if not hasattr(cmd, "commands"):
            found.extend((path, p) for p in cmd.params if p.opts[0].startswith("--") and not p.is_flag
                         and p.name != "set_")
    walk(get_command(app), [])
    return found


OPTIONS = _options()
INT_BAD, FLOAT_BAD = ["x", "1.5", "1e3", "nan", "", "10" * 15], ["x", "nan", "inf", "-inf", ""]


def _bad_values(param) -> list[str]:
    """Values `param` must refuse: of the wrong type, not a choice, out of range, huge, empty."""
    annotation = param.type_descriptor.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return ["", "nope", f"{typing.get_args(annotation)[0]}x"]
    below = [str(param.min - 1)] if param.min is not None else []
    if annotation is int:
        return INT_BAD + below
    if annotation is float:
        return FLOAT_BAD + below + ([str(param.max * 2 + 1)] if param.max is not None else [])
    return [""] if annotation is str else []  # paths: "" is "." to Typer, a valid folder


def test_every_value_option_is_range_or_choice_checked():
    unchecked = [(" ".join(path), p.opts[0]) for path, p in OPTIONS
                 if p.type_descriptor.annotation in (int, float, typing.Optional[int], typing.Optional[float])
                 and (p.min is None or (p.max is None and p.callback is None))]
    assert unchecked == []
    assert len(OPTIONS) > 50


CASES = [(path, p, v) for path, p in OPTIONS for v in _bad_values(p)]


@settings(deadline=None, max_examples=120)
@given(case=st.sampled_from(CASES))
def test_any_bad_option_value_is_one_line_exit_2_and_writes_nothing(case, tmp_path_factory):
    path, param, value = case
    work = tmp_path_factory.mktemp("cwd")
    args = [*path, *POSITIONAL.get(" ".join(path), ["emoji_tiny"])]
    for other in (p for where, p in OPTIONS if where == path and p.required and p is not param):
        args += [other.opts[0], REQUIRED[other.opts[0]]]
    cwd = os.getcwd()
    os.chdir(work)
    try:
        res = CliRunner().invoke(app, [*args, param.opts[0], value])
    finally:
        os.chdir(cwd)
    line = one_error_line(res)
    assert param.opts[0] in line or "Invalid value" in line, line
    assert list(work.iterdir()) == []
