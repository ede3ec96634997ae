"""Every code block of README.md and docs/*.md runs here, so examples cannot rot.

Per file, in a fresh working folder and in order: ```python blocks run in one namespace; ```bash
blocks run in bash, where `pixdiff` is `python -m pixdiff.cli` and `python` this interpreter. Data
caches are shared across files (one cache home for the module). Two HTML comments right above a
block change that, and each must give its reason:
    <!-- parse-only: REASON -->  (data or hardware we lack) every `pixdiff` command in the block is
                                 parsed against the CLI (command, options, values) but not run;
    <!-- not run: REASON -->     the block is the test suite itself or takes hours.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!-- (?P<mark>parse-only|not run): (?P<why>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```",
                   re.S)


def blocks(path: Path) -> list[dict]:
    return [m.groupdict() for m in FENCE.finditer(path.read_text())]


def commands(body: str) -> list[list[str]]:
    """The `pixdiff` argument lists of a shell block (after torchrun's `-m pixdiff.cli` too)."""
    out = []
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "pixdiff":
            out.append(words[1:])
        elif "pixdiff.cli" in words:
            out.append(words[words.index("pixdiff.cli") + 1:])
        else:
            out.append(["<not a pixdiff command>", line])
    return out


def test_every_block_is_run_or_says_why_not():
    for path in DOCS:
        for b in blocks(path):
            assert b["lang"] in ("python", "bash", "toml", ""), f"{path.name}: unknown block language {b['lang']}"
            if b["mark"]:
                assert len(b["why"].strip()) > 10, f"{path.name}: a {b['mark']} block must say why"
            assert b["lang"] != "" or b["mark"] == "not run", f"{path.name}: an unmarked block has no language"


def parse_only(args: list[str]) -> None:
    """Parse a command line with the CLI's own parser (types, ranges, choices) without running it;
    an AssertionError names what does not parse."""
    import typer

    from pixdiff.cli import app

    cmd, words = typer.main.get_command(app), list(args)
    while hasattr(cmd, "get_command"):  # a group: descend to the subcommand
        name, words = words[0], words[1:]
        parent = cmd
        cmd = parent.get_command(parent.make_context("pixdiff", [name], resilient_parsing=True), name)
        assert cmd is not None, f"no pixdiff command {name!r} in {args}"
    try:
        cmd.make_context(args[0], words)
    except Exception as e:  # the parser's UsageError / BadParameter (typer vendors click)
        raise AssertionError(f"pixdiff {' '.join(args)}: {type(e).__name__}: {e}") from None


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache-home")


SHELL_PRELUDE = 'set -euo pipefail\npixdiff() { "$PY" -m pixdiff.cli "$@"; }\npython() { "$PY" "$@"; }\n'


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_code_blocks_run(path: Path, tmp_path: Path, cache_home: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIXDIFF_CACHE_DIR", str(cache_home))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PY": sys.executable}
    module = types.ModuleType(f"docs_{path.stem.lower()}")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(sys, "path", list(sys.path))  # a block may extend it, for this test only
    namespace = module.__dict__
    for i, b in enumerate(blocks(path)):
        where = f"{path.name} block {i + 1}"
        if b["mark"] == "not run":
            continue
        if b["lang"] == "python":
            first = b["body"].splitlines()[0]
            if first.startswith("# plugins/") and first.endswith(".py"):  # a file the reader creates
                target = tmp_path / first.removeprefix("# ")
                target.parent.mkdir(exist_ok=True)
                target.write_text(b["body"])
            exec(compile(b["body"], where, "exec"), namespace)
        elif b["lang"] == "bash" and b["mark"] == "parse-only":
            for args in commands(b["body"]):
                assert args[0] != "<not a pixdiff command>", f"{where}: {args[1]!r} is not a pixdiff command"
                parse_only(args)
        elif b["lang"] == "bash":
            res = subprocess.run(["bash", "-c", SHELL_PRELUDE + b["body"]], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=900)
            assert res.returncode == 0, f"{where}:\n{b['body']}\n{res.stderr[-3000:]}"


def test_parse_only_catches_a_wrong_option():
    # negative control for the parse-only mode
    parse_only(["sample", "runs/x", "--num", "4", "--out", "o"])
    parse_only(["bench", "latency", "dip_xl16", "--json"])
    with pytest.raises(AssertionError, match="No such option"):
        parse_only(["sample", "runs/x", "--nmu", "4", "--out", "o"])
    with pytest.raises(AssertionError, match="four"):
        parse_only(["sample", "runs/x", "--num", "four", "--out", "o"])
    with pytest.raises(AssertionError, match="no pixdiff command 'smaple'"):
        parse_only(["smaple", "runs/x"])


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_every_relative_link_resolves_to_a_tracked_file():
    # a fresh clone has only what git tracks: a link into runs/ or any ignored path is broken there
    pages = [*DOCS, *ROOT.glob("*/README.md")]
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    if not tracked:
        pytest.skip("not a git checkout")
    folders = {str(Path(f).parent) for f in tracked} | {str(p) for f in tracked for p in Path(f).parents}
    broken = []
    for page in pages:
        for m in LINK.finditer(page.read_text()):
            target = m["target"].split("#")[0]
            if not target or re.match(r"[a-z]+:", target):  # anchors, http:, mailto:
                continue
            rel = os.path.relpath((page.parent / target).resolve(), ROOT)
            if rel not in tracked and rel not in folders:
                broken.append(f"{page.relative_to(ROOT)} -> {m['target']}")
    assert broken == []


def test_the_emoji_tiny_table_quotes_the_models_sizes():
    """benchmarks/README.md's emoji_tiny params and GFLOP are what `model_summary` gives today."""
    from pixdiff.bench import dit_only
    from pixdiff.nn.summary import model_summary
    from pixdiff.recipe import load_recipe

    text = (ROOT / "benchmarks" / "README.md").read_text()
    row = re.compile(r"^\| (?P<model>emoji_tiny \(DiP, U-Net head\)|DiT-only counterpart) "
                     r"\| (?P<params>[\d,]+) \| (?P<gflop>[\d.]+) \|", re.M)
    rows = {m["model"]: m for m in row.finditer(text)}
    config = load_recipe("emoji_tiny").model
    for name, cfg in (("emoji_tiny (DiP, U-Net head)", config), ("DiT-only counterpart", dit_only(config))):
        summary = model_summary(cfg)
        assert int(rows[name]["params"].replace(",", "")) == summary["params"], name
        assert rows[name]["gflop"] == f"{summary['gflops']:.4f}".rstrip("0"), name
