"""Image-folder source: root/<class_name>/<image files>, the ImageNet training layout, or a flat
folder of images (one class: for unconditional models)."""

from __future__ import annotations

from pathlib import Path

from .images import DataError, Item, Source

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


def _visible(entries: list[Path]) -> list[Path]:
    # Hidden names are skipped: `.DS_Store`, `.ipynb_checkpoints`, and macOS `._x.jpg` resource
    # forks, which carry an image suffix but are not images.
    return sorted(p for p in entries if not p.name.startswith("."))


def folder_source(root: str | Path, *, limit: int | None = None) -> Source:
    """List root/<class>/*.{png,jpg,jpeg,webp,bmp} (suffix case-insensitive, not recursive).

    Classes are the sorted names of the sub-folders of `root` and get labels 0..K-1; files inside
    a class folder are taken in sorted order. `limit` keeps the first n images per class. A root
    without sub-folders but with images is one class, named after the root (a user's own
    unlabelled images, for an unconditional model). Raises DataError (naming the path) for a
    missing root, a root with neither class folders nor images, no images at all, or an empty
    class folder.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    class_dirs = [p for p in _visible(list(root.iterdir())) if p.is_dir()] or [root]
    items: list[Item] = []
    empty: list[Path] = []
    for label, class_dir in enumerate(class_dirs):
        files = [p for p in _visible(list(class_dir.iterdir())) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not files:
            empty.append(class_dir)
        items.extend(Item(p, label) for p in files)
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    if class_dirs == [root] and not items:
        raise DataError(f"image folder {root} has neither class sub-folders nor images ({suffixes}); "
                        f"expected {root}/<class_name>/<image files> or {root}/<image files>")
    if not items:
        raise DataError(f"no images ({suffixes}) found in the class folders of {root}")
    if empty:
        names = ", ".join(str(p) for p in empty)
        raise DataError(f"class folder(s) with no images ({suffixes}): {names}")
    source = Source(f"folder:{root}", tuple(p.name for p in class_dirs), tuple(items), "center_crop")
    return source.take(limit)
