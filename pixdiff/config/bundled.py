"""Where the built-in recipe files and the example plugin live.

The top-level `recipes/` and `plugins/` folders of a clone are the source; a wheel carries copies
of them as `pixdiff/_bundled/{recipes,plugins}` (setup.py's build step), so an installed pixdiff
finds its recipes from any directory."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # .../pixdiff


def bundled_dir(name: str) -> Path:
    """The wheel's copy of folder `name` if this pixdiff was installed from one, else the clone's."""
    packaged = PACKAGE / "_bundled" / name
    return packaged if packaged.is_dir() else PACKAGE.parent / name
