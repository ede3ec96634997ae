"""Only what pyproject.toml cannot say: the wheel carries copies of the top-level recipes/ and
plugins/ folders (their source stays at the top of the clone, where users name them by path)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("recipes", "plugins")


class BuildWithBundled(build_py):
    def run(self) -> None:
        super().run()
        for name in BUNDLED:
            dst = Path(self.build_lib) / "pixdiff" / "_bundled" / name
            dst.mkdir(parents=True, exist_ok=True)
            for src in sorted(Path(name).iterdir()):
                if src.suffix in (".py", ".md"):
                    shutil.copy2(src, dst / src.name)


setup(cmdclass={"build_py": BuildWithBundled})
