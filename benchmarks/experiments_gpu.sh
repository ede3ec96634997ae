#!/usr/bin/env bash
# The experiments page's studies at DiP-XL/16's patch and width on one GPU: 256 px OpenMoji, P = 16
# (256 tokens of 768 values), width 1152, 12 blocks (experiments/studies.py, scale "gpu"). Estimated
# ~1.4 H100-hours in all; never run so far. Resumable: every finished arm is kept and an unfinished
# one continues from its checkpoint, so a machine that allows 10 minutes a command can run it as
# `LIMIT=590 bash benchmarks/experiments_gpu.sh` again and again until it prints the page.
#
#   bash benchmarks/experiments_gpu.sh [--study fair family fig3]      (from anywhere)
#
# Writes run folders to ${WORK:-runs/experiments_gpu} and the page to docs/experiments_gpu.md with its
# sample grids in docs/experiments_gpu/; the page records the command, device and torch version.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
$PY -m pixdiff.cli data prepare openmoji --resolution 256
timeout "${LIMIT:-0}" $PY -m experiments.run_all --scale gpu --workers 1 --work "${WORK:-runs/experiments_gpu}" \
  --page docs/experiments_gpu.md "$@"
