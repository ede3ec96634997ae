import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["sample", "--help"], ["info", "--help"]])
def test_help_does_not_import_torch(args):
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "pixdiff.cli", *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "Usage" in res.stdout


def test_info_json_reports_the_papers_counts():
    res = cli("info", "recipes/dip_xl16.py", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["params"] == 631_989_411 and info["params_head"] == 6_968_067
    assert info["tokens"] == 256 and info["patch_size"] == 16 and info["resolution"] == 256
    assert 250 < info["gflops"] < 260


def test_info_table_and_overrides():
    res = cli("info", "dip_xl16:dit_only", "--set", "model.backbone.depth=32")
    assert res.returncode == 0, res.stderr
    assert "771,953,664" in res.stdout


def test_ls_lists_recipes_functions_and_plugins():
    res = cli("ls")
    assert res.returncode == 0, res.stderr
    assert "dip_xl16: build, dit_only" in res.stdout and "emoji_tiny" in res.stdout
    assert "plugin head film_conv" in res.stdout and "plugin recipe dip_xl16_film" in res.stdout


def test_plugin_recipe_builds():
    res = cli("info", "plugin:dip_xl16_film", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["head"] == "FiLMConvHead"


def test_the_cpu_sized_plugin_recipe_trains_and_samples_from_any_folder(tmp_path):
    # from a folder without ./plugins: the example plugin is found where the package bundles it
    tiny = ["--set", "train.max_steps=2", "--set", "train.sample_every=0", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    res = cli("train", "plugin:film_conv_tiny", *tiny, "--out", str(tmp_path / "run"), "--no-progress",
              "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = cli("sample", str(tmp_path / "run"), "--num", "4", "--steps", "2", "--out", str(tmp_path / "s"),
              "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "s" / "grid.png").is_file(), res.stderr


def test_broken_plugin_is_named_in_one_clear_error(tmp_path):
    (tmp_path / "broken_head.py").write_text("import not_a_module_anywhere\n")
    res = cli("ls", env={"PIXDIFF_PLUGINS": str(tmp_path)})
    assert res.returncode == 2
    assert "plugin 'broken_head'" in res.stderr and "not_a_module_anywhere" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_recipe_and_key_errors():
    res = cli("info", "nope")
    assert res.returncode == 2 and "built-in recipes:" in res.stderr
    res = cli("info", "dip_xl16", "--set", "model.backbone.width=3")
    assert res.returncode == 2 and "unknown key 'model.backbone.width'" in res.stderr
    assert "model.backbone.dim" in res.stderr


def test_bench_latency_json_on_cpu():
    res = cli("bench", "latency", "emoji_tiny", "--steps", "3", "--warmup", "1", "--repeats", "2", "--device", "cpu",
              "--set", "model.backbone.depth=2", "--set", "model.backbone.dim=32", "--set", "model.backbone.num_heads=2",
              "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("median_s", "min_s", "max_s", "nfe", "params", "device", "dtype", "torch_version", "baseline"):
        assert key in out, key
    assert out["min_s"] <= out["median_s"] <= out["max_s"]
    assert out["baseline"]["params"] < out["params"] and out["dtype"] == "fp32"


def test_every_option_alias_is_defined_once():
    # an alias defined twice silently wins by import order (Typer reads annotations late)
    import ast

    seen: dict[str, list[str]] = {}
    for path in sorted([*(ROOT / "pixdiff" / "commands").glob("*.py"), ROOT / "pixdiff" / "cli.py"]):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript) and \
                    getattr(node.value.value, "id", "") == "Annotated":
                for target in node.targets:
                    seen.setdefault(target.id, []).append(path.name)
    assert seen and {k: v for k, v in seen.items() if len(v) > 1} == {}


@pytest.mark.parametrize("command", ["edit", "inpaint", "interpolate"])
def test_edit_commands_show_their_own_steps_and_cfg(command):
    from typer.testing import CliRunner

    from pixdiff.cli import app

    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    text = " ".join(res.stdout.split())
    assert res.exit_code == 0
    assert "Steps of the sampling grid (default: the recipe's)" in text and "Sampling steps" not in text
    assert "0.0<=x<=1000000.0" in text  # --cfg's upper bound
    for name in ("euler", "heun", "ab2", "ddim", "odeint"):  # the solver list comes from the solvers' table
        assert name in text


def test_solver_help_is_the_solver_table():
    from pixdiff.diffusion.names import SOLVER_NAMES
    from pixdiff.diffusion.solvers import SOLVERS

    assert tuple(SOLVERS) == SOLVER_NAMES
    res = cli("sample", "x.pt", "--out", "o", "--solver", "rk4")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and ", ".join(SOLVER_NAMES) in res.stderr


def test_one_description_everywhere():
    import tomllib

    from pixdiff.about import DESCRIPTION

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["description"] == DESCRIPTION
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert DESCRIPTION in readme
    assert DESCRIPTION.split(":")[0] in " ".join(cli("--help").stdout.split())
