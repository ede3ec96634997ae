#!/usr/bin/env bash
# The built wheel works outside the clone: build it, install it (without its dependencies, which
# come from the dev environment's site-packages through a .pth file, the demo extra that emoji_tiny
# trains on included) into a fresh venv in a temp folder, and from there list recipes, count
# DiP-XL/16 and JiT-B/16, train emoji_tiny 2 steps and sample from the checkpoint. Usage: bash .ci/check_wheel.sh [PYTHON] (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(realpath -s "${1:-.venv/bin/python}")  # -s: keep the venv's own path (not its base interpreter)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# build from a copy of the source (setuptools' build/ folder would otherwise keep files deleted since)
mkdir "$tmp/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 tar -c -f - | tar -x -C "$tmp/src" -f -
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$tmp/dist" "$tmp/src"
"$PY" -m venv "$tmp/venv"
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/dev-dependencies.pth"
"$tmp/venv/bin/python" -m pip install --quiet --no-deps --no-index "$tmp"/dist/pixdiff-*.whl
cd "$tmp"  # nothing of the clone is reachable from here
px="$tmp/venv/bin/pixdiff"
where=$("$tmp/venv/bin/python" -c 'import pixdiff; print(pixdiff.__file__)')
case "$where" in "$tmp"/venv/*) ;; *) echo "pixdiff came from $where, not the wheel" >&2; exit 1 ;; esac
"$px" ls | tee ls.txt
for name in emoji_tiny dip_xl16 jit film_conv_tiny; do grep -q "$name" ls.txt || { echo "pixdiff ls lacks $name" >&2; exit 1; }; done
"$px" info dip_xl16 --json | "$tmp/venv/bin/python" -c 'import json, sys; n = json.load(sys.stdin)["params"]; assert n == 631989411, n'
"$px" info jit:b16 --json > /dev/null
tiny=(--set train.max_steps=2 --set model.backbone.depth=1 --set model.backbone.dim=32 --set model.backbone.num_heads=2
      --set model.backbone.image_size=16 --set train.global_batch=8 --set train.sample_every=0
      --set "data.cache_dir=$tmp/cache")
"$px" train emoji_tiny "${tiny[@]}" --out run --no-progress --device cpu
"$px" sample run --num 4 --steps 2 --out samples --device cpu
test -s samples/samples.npz && test -s samples/grid.png
echo "wheel check passed: $(basename "$tmp"/dist/pixdiff-*.whl)"
