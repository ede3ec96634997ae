"""Pixel metrics (pixdiff.eval.pixels) and their sanity rows (pixdiff.eval.sanity): closed forms, degradations,
the rows on tiny synthetic data, and the `pixdiff eval-sanity` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.eval.pixels import (
    balanced_accuracy,
    block_means,
    coarse_fd,
    coarse_kid,
    detail_fd,
    detail_features,
    detail_floor,
    detail_part_fd,
    detail_ratio,
    edge_sharpness,
    grain,
    in_patch_detail,
    layout_accuracy,
)
from pixdiff.eval.sanity import (
    BLURRY,
    EFFNET_METRICS,
    GRAINY,
    PIXEL_METRICS,
    ROWS,
    Degradations,
    SanityResult,
    add_noise,
    add_seams,
    balanced_draw,
    blur,
    effnet_features,
    run_sanity,
)

ROOT = Path(__file__).resolve().parent.parent


def rectangles(count: int = 200, size: int = 32, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sharp rectangles in a class colour at random places on grey, with a little pixel texture: uint8 NHWC."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0, 1, (classes, 3))
    labels = np.arange(count) % classes
    x = 0.5 + rng.normal(0, 0.03, (count, size, size, 3))
    for i, c in enumerate(labels):
        for _ in range(3):
            top, left = rng.integers(0, size - 6, 2)
            h, w = rng.integers(3, 7, 2)
            x[i, top : top + h, left : left + w] = colours[c]
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8), labels


# ---------------------------------------------------------------- closed forms


def test_block_means_of_constant_and_split_images():
    x = np.zeros((2, 8, 8, 3), np.uint8)
    x[0] = 51
    x[1, :, 4:] = 255  # right half white: the 2x2 grid's right column is 1, the left one 0
    m = block_means(x, 2).reshape(2, 2, 2, 3)
    assert np.allclose(m[0], 0.2) and np.allclose(m[1, :, 0], 0) and np.allclose(m[1, :, 1], 1)


def test_fd_of_identical_sets_is_zero():
    x, _ = rectangles(120)
    assert abs(coarse_fd(x, x)) < 1e-10  # float64 round-off of a 48x48 matrix square root


@settings(deadline=None, max_examples=30)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=60).filter(lambda v: len(set(v)) > 1), st.integers(0, 5))
def test_balanced_accuracy_closed_forms(labels, constant):
    labels = np.asarray(labels)
    k = len(np.unique(labels))
    assert balanced_accuracy(labels, labels) == 1.0
    expected = 1 / k if constant in labels else 0.0  # the constant's own class is all right, every other all wrong
    assert balanced_accuracy(np.full_like(labels, constant), labels) == pytest.approx(expected, abs=1e-15)


def test_balanced_accuracy_weighs_classes_not_images():
    labels = np.array([0] * 9 + [1])
    assert balanced_accuracy(np.zeros(10, int), labels) == 0.5  # 0.9 plain accuracy


def test_layout_accuracy_reads_classes_and_is_at_chance_for_shuffled_labels():
    x, y = rectangles(400)
    pool, queries = slice(0, 200), slice(200, 400)
    assert layout_accuracy(x[queries], y[queries], x[pool], y[pool]) > 0.35  # chance 0.25, its std ~0.03 here
    shuffled = np.random.default_rng(1).permutation(y[queries])
    assert abs(layout_accuracy(x[queries], shuffled, x[pool], y[pool]) - 0.25) < 0.1


def test_in_patch_detail_closed_forms():
    cols = np.arange(16, dtype=np.float64)
    ramp = np.broadcast_to(10 * cols[None, :, None], (16, 16, 3))
    steps = np.broadcast_to(40 * (cols // 4)[None, :, None], (16, 16, 3))  # constant inside 4 px patches
    zigzag = np.broadcast_to(100 + 10 * (-1) ** cols[None, :, None], (16, 16, 3))  # +-10 on alternate columns
    x = np.stack([ramp, steps, zigzag]).astype(np.uint8)
    # linear inside a patch; seams excluded (zero up to the round-off of dividing by 255)
    assert in_patch_detail(x[:1], 4) < 1e-30 and in_patch_detail(x[1:2], 4) < 1e-30
    # zigzag: every row second difference is +-40, every column one 0; rows and columns hold as many triples
    assert in_patch_detail(x[2:], 4) == pytest.approx((40 / 255) ** 2 / 2, rel=1e-12)
    assert detail_ratio(x[2:], x[2:], 4) == 1.0


def test_detail_features_locate_the_in_patch_energy():
    cols = np.arange(16, dtype=np.float64)
    zigzag = 100 + 10 * (-1) ** cols[None, :, None]  # +-10 on alternate columns: row second differences +-40
    x = np.full((1, 16, 16, 3), 100.0)
    x[0, :8, :8] = np.broadcast_to(zigzag, (16, 16, 3))[:8, :8]  # detail in the top-left 8x8 block only
    f = detail_features(x.astype(np.uint8), patch=4, grid=2)[0]  # 2x2x3 block means, then 2x2 log energies
    energy = f[12:].reshape(2, 2)
    # centres j = 1, 2 of each 4 px patch count (2 of 4 columns), each with 3 channels of (40/255)^2
    assert energy[0, 0] == pytest.approx(np.log10(detail_floor(4) + 3 * (40 / 255) ** 2 / 2), rel=1e-12)
    assert np.allclose(energy[[0, 1, 1], [1, 0, 1]], np.log10(detail_floor(4)))  # flat blocks sit at the floor
    assert np.array_equal(f[:12], block_means(x.astype(np.uint8), 2)[0])
    assert abs(detail_fd(x.astype(np.uint8).repeat(8, 0), x.astype(np.uint8).repeat(8, 0), 4)) < 1e-9
    assert abs(detail_part_fd(x.astype(np.uint8).repeat(8, 0), x.astype(np.uint8).repeat(8, 0), 4)) < 1e-9


def test_the_detail_floor_is_what_one_level_of_noise_adds_to_a_flat_block():
    rng = np.random.default_rng(0)
    flat = np.full((64, 32, 32, 3), 128.0)
    noisy = flat + rng.normal(0, 1, flat.shape)  # std one 8-bit level, unrounded (the floor's own definition)
    energy = 10 ** detail_features(np.clip(noisy, 0, 255).astype(np.float64), patch=8, grid=4)[:, 48:]
    assert energy.mean() - detail_floor(8) == pytest.approx(detail_floor(8), rel=0.03)
    assert detail_floor(8) == 36 * 6 / 8 / 255**2


# ---------------------------------------------------------------- grain and edge sharpness


def test_grain_is_zero_on_flat_images_and_the_noise_variance_on_noised_flat_regions():
    flat = np.full((8, 32, 32, 3), 90, np.uint8)
    assert grain(flat) == 0.0
    rng = np.random.default_rng(1)
    for s in (1.0, 3.0, 8.0):
        noised = np.clip(np.rint(flat + rng.normal(0, s, flat.shape)), 0, 255).astype(np.uint8)
        assert grain(noised) == pytest.approx(s**2 + 1 / 12, rel=0.05)  # rounding adds a uniform 1/12 level²
    # flat colour, ramps and axis-aligned edges hold no grain; noise on the flat half is still counted
    x = np.zeros((1, 32, 32, 3))
    x[0, :, :16] = 200
    x[0] += np.arange(32)[None, :, None]  # a ramp on top of a vertical edge
    assert grain(x.astype(np.uint8)) == 0.0


def test_edge_sharpness_closed_forms():
    stripes = np.zeros((2, 32, 32, 3), np.uint8)
    stripes[:, :, (np.arange(32) // 8) % 2 == 1] = 255  # 0 -> 255 steps every 8 columns: 1/16 of all steps
    assert edge_sharpness(stripes) == 255.0 and edge_sharpness(np.full_like(stripes, 40)) == 0.0
    for sigma in (0.5, 0.7, 1.0):
        taps = np.exp(-0.5 * (np.arange(-3, 4) / sigma) ** 2)
        # a blurred step rises by 255 x (the kernel's centre tap) between the two pixels astride it (+-1 rounding)
        assert abs(edge_sharpness(blur(stripes, sigma)) - 255 * taps[3] / taps.sum()) <= 1.0
    noised = add_noise(stripes // 2 + 60, 2 / 255, np.random.default_rng(0))
    assert abs(edge_sharpness(noised) / edge_sharpness(stripes // 2 + 60) - 1) < 0.1  # grain barely moves it


def test_grain_and_sharpness_tell_mild_grain_from_mild_blur():
    rng = np.random.default_rng(0)
    x = np.full((60, 32, 32, 3), 128, np.uint8)  # flat colour with sharp rectangles, no texture (emoji-like)
    for img in x:
        top, left = rng.integers(0, 20, 2)
        img[top : top + 10, left : left + 12] = rng.integers(0, 256, 3)
    g0, e0 = grain(x), edge_sharpness(x)
    rng = np.random.default_rng(0)
    assert g0 == 0 and grain(add_noise(x, 2 / 255, rng)) > 3 and grain(blur(x, 0.7)) < 0.5
    assert edge_sharpness(blur(x, 0.7)) < 0.8 * e0 and abs(edge_sharpness(add_noise(x, 2 / 255, rng)) / e0 - 1) < 0.1


def test_pixel_metrics_refuse_bad_shapes():
    x = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="grid"):
        block_means(x, 3)
    with pytest.raises(ValueError, match="patch size"):
        in_patch_detail(x, 2)


# ---------------------------------------------------------------- degradations


def test_degradations():
    flat = np.full((2, 16, 16, 3), 77, np.uint8)
    assert np.array_equal(blur(flat, 1.5), flat)  # normalised taps, reflected borders
    x, _ = rectangles(4, 16)
    assert blur(x, 1.0).std() < x.std()
    a, b = (add_noise(x, 0.1, np.random.default_rng(3)) for _ in range(2))
    assert np.array_equal(a, b) and not np.array_equal(a, x)  # seeded
    seamed = add_seams(flat, 4, 0.1, np.random.default_rng(0)).astype(int)
    patches = seamed.reshape(2, 4, 4, 4, 4, 3)
    assert (patches == patches[:, :, :1, :, :1]).all() and len(np.unique(seamed)) > 1  # one offset per patch
    with pytest.raises(ValueError, match="> 0"):
        Degradations(blur_sigma=0)


# ---------------------------------------------------------------- sanity rows


SHORT = {"FD, 4x4 block means (48 dims)": "FD", "KID, 4x4 block means": "KID",
         "FD, 4x4 block means + log in-patch detail (64 dims)": "FD + detail",
         "FD, log in-patch detail part (16 dims)": "FD detail part",
         "balanced layout accuracy, 10-NN on 8x8 block means": "layout", "in-patch detail ratio": "detail ratio",
         "grain excess over the data (8-bit levels²)": "grain", "edge sharpness ratio (steepest 1% of steps)": "edges",
         "seam score": "seam score"}


@pytest.fixture(scope="module")
def rows() -> dict[str, SanityResult]:
    x, y = rectangles(260)  # 65 per class: a balanced 25 of each fits outside A
    results = run_sanity(x, y, 100, 8, repeats=3, degradations=Degradations(blur_sigma=2.0, noise_std=0.3, seam_std=0.1),
                         metrics=PIXEL_METRICS)
    return {SHORT[r.metric]: r for r in results}


def test_every_metric_has_every_row_per_split(rows):
    assert set(rows) == set(SHORT.values())
    for r in rows.values():
        assert tuple(r.scores) == ROWS and ROWS[:2] == ("halves", "balanced")
        assert all(len(v) == 3 and np.isfinite(v).all() for v in r.scores.values())
    assert rows["grain"].must_detect == GRAINY and rows["edges"].must_detect == BLURRY
    assert rows["grain"].detects("noised") and rows["edges"].detects("blurred")


def test_the_balanced_row_draws_real_images_outside_a_with_labels_i_mod_k():
    labels = np.array([0] * 50 + [1] * 10 + [2] * 5)
    index, got = balanced_draw(labels, np.arange(0, 40), 9, np.random.default_rng(0))
    assert got.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and np.array_equal(labels[index], got)
    assert len(set(index.tolist())) == 9 and min(index) >= 40
    with pytest.raises(ValueError, match="needs 4 images of class 2 outside A, the data have 3"):
        balanced_draw(labels, np.array([60, 61]), 12, np.random.default_rng(0))


def test_effnet_rows_score_every_row_and_share_one_extraction(monkeypatch):
    x, y = rectangles(24, 16)
    first = effnet_features(x[:4])
    assert effnet_features(x[:4].copy()) is first and first.shape == (4, 1280)
    results = run_sanity(x, y, 5, 4, repeats=1, metrics=EFFNET_METRICS)
    assert [r.metric.split(",")[0] for r in results] == ["KID", "precision", "recall"]
    for r in results:
        assert tuple(r.scores) == ROWS and np.isfinite([v[0] for v in r.scores.values()]).all()
    assert all(0 <= v[0] <= 1 for r in results[1:] for v in r.scores.values())


def test_halves_beat_blur_and_noise_for_the_detail_metrics(rows):
    for name in ("detail ratio", "FD + detail", "FD detail part"):
        assert rows[name].passes and rows[name].must_detect == ("blurred", "noised"), rows[name]
    assert rows["seam score"].passes and rows["seam score"].must_detect == ("seamed",)
    detail = rows["detail ratio"].scores
    assert max(detail["blurred"]) < 0.5 < 2 < min(detail["noised"])  # blur removes detail, noise adds grain
    assert rows["seam score"].detects("seamed") and not rows["detail ratio"].detects("seamed")


def test_only_the_layout_accuracy_sees_shuffled_labels(rows):
    for name in ("FD", "KID", "FD + detail", "detail ratio", "grain", "edges"):  # label-free: the halves' exactly
        assert rows[name].scores["shuffled"] == rows[name].scores["halves"]
    # a layout that names the class: class c darkens quadrant c (4 classes, chance 0.25)
    rng = np.random.default_rng(0)
    y = np.arange(160) % 4
    x = rng.integers(150, 256, (160, 16, 16, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 8 * (c // 2) : 8 * (c // 2) + 8, 8 * (c % 2) : 8 * (c % 2) + 8] //= 3
    layout = run_sanity(x, y, 60, 4, repeats=3, metrics=tuple(m for m in PIXEL_METRICS if "layout" in m.name))[0]
    assert layout.passes and layout.must_detect == ("shuffled",)
    assert min(layout.scores["halves"]) == 1.0 and abs(np.mean(layout.scores["shuffled"]) - 0.25) < 0.1


def test_fd_on_block_means_sees_noise_and_seams(rows):
    # block means average detail away, so they see blur only where it moves mass across blocks
    assert rows["FD"].detects("noised") and rows["FD"].detects("seamed")


def test_the_rule_compares_ranges_over_splits():
    r = SanityResult("m", "lower", {"halves": (1.0, 2.0), "blurred": (2.5, 3.0), "noised": (1.5, 9.0), "seamed": (3,)})
    assert r.detects("blurred") and not r.detects("noised") and not r.passes
    assert SanityResult("a", "higher", {"halves": (0.9, 0.8), "blurred": (0.1, 0.7)}).detects("blurred")
    assert not SanityResult("d", "one", {"halves": (1.1,), "blurred": (1 / 1.05,)}).detects("blurred")


def test_sanity_refuses_bad_settings():
    x, y = rectangles(20, 16)
    with pytest.raises(ValueError, match="two disjoint sets"):
        run_sanity(x, y, 11, 4)
    with pytest.raises(ValueError, match="patch size"):
        run_sanity(x, y, 5, 5)


def test_coarse_kid_is_near_zero_for_halves_and_large_for_noise():
    x, _ = rectangles(200)
    noised = add_noise(x[100:], 0.5, np.random.default_rng(0))
    assert abs(coarse_kid(x[:100], x[100:])) < coarse_kid(x[:100], noised)


# ---------------------------------------------------------------- CLI


def test_eval_sanity_cli(tmp_path):
    args = [sys.executable, "-m", "pixdiff.cli", "eval-sanity", "openmoji", "--resolution", "16", "--n", "10",
            "--patch", "4", "--limit", "6", "--repeats", "2", "--no-effnet", "--cache-dir", str(tmp_path)]
    res = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "| in-patch detail ratio | closer to 1 |" in res.stdout and "1/9 = 0.111" in res.stdout
    bad = subprocess.run([*args[:8], "30", *args[9:]], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "two disjoint sets" in bad.stderr


def test_the_sanity_page_is_rendered_from_its_raw_rows():
    from experiments.metrics_sanity import render, results_of

    x, y = rectangles(120, 16)
    results = run_sanity(x, y, 20, 4, repeats=2, metrics=PIXEL_METRICS)
    part = {"repeats": 2, "wall_s": 1.0, "rows": [{"metric": r.metric, "better": r.better, "scores": r.scores,
                                                   "must_detect": list(r.must_detect), "passes": r.passes}
                                                  for r in results]}
    page = render({"command": "python -m experiments.metrics_sanity", "environment": {"cpu": "test"}, "pixel": part})
    assert [r.scores for r in results_of(part)] == [r.scores for r in results]
    assert "| grain excess over the data (8-bit levels²) | lower |" in page and "- **edge sharpness**: halves" in page
    assert "### EfficientNet-lite0 features\n\nNot measured in this run." in page
