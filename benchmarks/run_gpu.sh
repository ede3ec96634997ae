#!/usr/bin/env bash
# Every GPU benchmark of DiP-XL/16 at 256 px (with its DiT-only baseline), of JiT-B/16 and
# JiT-L/16, and of PixNerd-XL/16, PixelDiT-XL and DeCo-XL/16 (the `family` group), one JSON per result.
#
#   bash benchmarks/run_gpu.sh [all | latency | throughput | heads | jit | family | reuse | meanflow | NAME ...]  (from anywhere)
#
# Results go to ${OUT:-benchmarks/results}/NAME.json: {"name", "command", "exit_code", "wall_s",
# "nvidia_smi", "torch_version", "cuda_version", "git_commit", "result" (the CLI's --json output),
# "error" (stderr tail, on failure)}. A failed benchmark is recorded and the others still run; the
# exit status is the number of failures. pixdiff runs from the source tree (PYTHONPATH=<repo>), no
# install needed. Environment: PYTHON (default python3), RECIPE (default dip_xl16), LIMIT (seconds
# per benchmark before it is killed, default 900), GIT_COMMIT (recorded where the tree has no .git).
#
# Expected wall time on one H100: eager runs take seconds; each compiled run spends most of its
# time compiling (one graph per batch shape; latency compiles the recipe and its baseline), about
# 1-2 min per graph. See benchmarks/README.md for splitting the list across calls.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RECIPE=${RECIPE:-dip_xl16}
LIMIT=${LIMIT:-900}
OUT_DIR=${OUT:-benchmarks/results}

# name -> arguments of `pixdiff bench`; the paper's protocol: 1 image, 100 Euler steps, CFG 4.0
LAT="latency $RECIPE --steps 100 --cfg 4.0 --batch 1 --device cuda"
SAMPLE="throughput $RECIPE --mode sample --steps 100 --device cuda --warmup 1 --iters 2"
TRAIN="throughput $RECIPE --mode train --batch 32 --device cuda --warmup 3 --iters 20"
declare -A ARGS=(
  [lat_bf16_eager]="$LAT --dtype bf16 --warmup 2 --repeats 5"
  [lat_fp32_eager]="$LAT --dtype fp32 --warmup 1 --repeats 3"
  [lat_bf16_compiled]="$LAT --dtype bf16 --compile --warmup 2 --repeats 5"
  [lat_fp32_compiled]="$LAT --dtype fp32 --compile --warmup 2 --repeats 3"
  [sample_b64_bf16_eager]="$SAMPLE --batch 64 --dtype bf16"
  [sample_b64_bf16_compiled]="$SAMPLE --batch 64 --dtype bf16 --compile"
  [sample_b256_bf16_compiled]="$SAMPLE --batch 256 --dtype bf16 --compile"
  [train_b32_bf16_eager]="$TRAIN --dtype bf16"
  [train_b32_bf16_compiled]="$TRAIN --dtype bf16 --compile"
  # the conv U-Net head over the whole image (convolving across patch borders) instead of per patch
  [lat_bf16_eager_image_head]="$LAT --dtype bf16 --warmup 2 --repeats 5 --set model.head.scope=image"
  [lat_bf16_compiled_image_head]="$LAT --dtype bf16 --compile --warmup 2 --repeats 5 --set model.head.scope=image"
)
# JiT (recipes/jit.py) with its own sampler: Heun, 50 steps (99 evaluations), CFG on (0.1, 1.0) at the
# recipe's scale; JiT has no head, so there is no DiT-only baseline to time
JIT=()
for m in b16 l16; do
  ARGS[jit_${m}_lat_bf16_eager]="latency jit:$m --steps 50 --batch 1 --device cuda --no-baseline --dtype bf16 --warmup 2 --repeats 5"
  ARGS[jit_${m}_lat_bf16_compiled]="latency jit:$m --steps 50 --batch 1 --device cuda --no-baseline --dtype bf16 --compile --warmup 2 --repeats 5"
  ARGS[jit_${m}_sample_b64_bf16_compiled]="throughput jit:$m --mode sample --steps 50 --batch 64 --device cuda --dtype bf16 --compile --warmup 1 --iters 2"
  ARGS[jit_${m}_train_b32_bf16_compiled]="throughput jit:$m --mode train --batch 32 --device cuda --dtype bf16 --compile --warmup 3 --iters 20"
  JIT+=(jit_${m}_lat_bf16_eager jit_${m}_lat_bf16_compiled jit_${m}_sample_b64_bf16_compiled jit_${m}_train_b32_bf16_compiled)
done
# the other pixel-space families at their XL sizes, each with its recipe's own sampler (PixNerd: Euler 100
# with a 0.04 last step; PixelDiT: ab2 100; DeCo: Euler 100), with CFG; no DiT-only baseline of their own
FAMILY=()
for m in pixnerd pixeldit deco; do
  ARGS[${m}_lat_bf16_compiled]="latency $m --batch 1 --device cuda --no-baseline --dtype bf16 --compile --warmup 2 --repeats 5"
  ARGS[${m}_train_b32_bf16_compiled]="throughput $m --mode train --batch 32 --device cuda --dtype bf16 --compile --warmup 3 --iters 20"
  FAMILY+=(${m}_lat_bf16_compiled ${m}_train_b32_bf16_compiled)
done
# backbone reuse (docs/speed.md): the same protocols with the backbone recomputed every 2nd / 4th step
# (2x / 4x fewer backbone evaluations; the head, or JiT's residual, every step); compare with the runs above
REUSE=()
for k in 2 4; do
  ARGS[reuse${k}_lat_bf16_compiled]="$LAT --dtype bf16 --compile --warmup 2 --repeats 5 --reuse every:$k"
  ARGS[reuse${k}_sample_b64_bf16_compiled]="$SAMPLE --batch 64 --dtype bf16 --compile --reuse every:$k"
  ARGS[jit_b16_reuse${k}_lat_bf16_compiled]="latency jit:b16 --steps 50 --batch 1 --device cuda --no-baseline --dtype bf16 --compile --warmup 2 --repeats 5 --reuse every:$k"
  ARGS[jit_b16_reuse${k}_sample_b64_bf16_compiled]="throughput jit:b16 --mode sample --steps 50 --batch 64 --device cuda --dtype bf16 --compile --warmup 1 --iters 2 --reuse every:$k"
  REUSE+=(reuse${k}_lat_bf16_compiled reuse${k}_sample_b64_bf16_compiled jit_b16_reuse${k}_lat_bf16_compiled
          jit_b16_reuse${k}_sample_b64_bf16_compiled)
done
# MeanFlow (docs/meanflow.md): 1 and 2 meanflow steps (one evaluation each, no CFG) against the runs
# above, and a training step with its JVP (eager: forward-mode AD runs SDPA's math backend)
MEANFLOW=()
for n in 1 2; do
  ARGS[meanflow${n}_lat_bf16_compiled]="latency dip_xl16:meanflow --steps $n --batch 1 --device cuda --no-baseline --dtype bf16 --compile --warmup 2 --repeats 5"
  ARGS[meanflow${n}_sample_b64_bf16_compiled]="throughput dip_xl16:meanflow --mode sample --steps $n --batch 64 --device cuda --dtype bf16 --compile --warmup 1 --iters 2"
  ARGS[jit_b16_meanflow${n}_lat_bf16_compiled]="latency jit:b16_meanflow --steps $n --batch 1 --device cuda --no-baseline --dtype bf16 --compile --warmup 2 --repeats 5"
  MEANFLOW+=(meanflow${n}_lat_bf16_compiled meanflow${n}_sample_b64_bf16_compiled jit_b16_meanflow${n}_lat_bf16_compiled)
done
ARGS[meanflow_train_b32_bf16_eager]="throughput dip_xl16:meanflow --mode train --batch 32 --device cuda --dtype bf16 --warmup 3 --iters 20"
MEANFLOW+=(meanflow_train_b32_bf16_eager)
LATENCY=(lat_bf16_eager lat_fp32_eager lat_bf16_compiled lat_fp32_compiled)
THROUGHPUT=(sample_b64_bf16_eager sample_b64_bf16_compiled sample_b256_bf16_compiled
            train_b32_bf16_eager train_b32_bf16_compiled)
HEADS=(lat_bf16_eager_image_head lat_bf16_compiled_image_head)

names=()
for arg in "${@:-all}"; do
  case $arg in
    all) names+=("${LATENCY[@]}" "${THROUGHPUT[@]}" "${HEADS[@]}" "${JIT[@]}" "${FAMILY[@]}" "${REUSE[@]}" "${MEANFLOW[@]}") ;;
    reuse) names+=("${REUSE[@]}") ;;
    meanflow) names+=("${MEANFLOW[@]}") ;;
    latency) names+=("${LATENCY[@]}") ;;
    throughput) names+=("${THROUGHPUT[@]}") ;;
    heads) names+=("${HEADS[@]}") ;;
    jit) names+=("${JIT[@]}") ;;
    family) names+=("${FAMILY[@]}") ;;
    *) if [[ -v ARGS[$arg] ]]; then names+=("$arg"); else
         echo "unknown benchmark '$arg'; choose all, latency, throughput, heads, jit, family, reuse, meanflow or: ${LATENCY[*]}" \
              "${THROUGHPUT[*]} ${HEADS[*]} ${JIT[*]} ${FAMILY[*]} ${REUSE[*]} ${MEANFLOW[*]}" >&2
         exit 2
       fi ;;
  esac
done

mkdir -p "$OUT_DIR"
if command -v nvidia-smi >/dev/null; then
  SMI=$(nvidia-smi --query-gpu=name,driver_version --format=csv 2>&1)
else
  SMI="nvidia-smi not found"
fi
echo "$SMI"
failures=0
for name in "${names[@]}"; do
  read -r -a args <<<"${ARGS[$name]}"
  cmd=("$PY" -m pixdiff.cli bench "${args[@]}" --json)
  tmp=$(mktemp -d)
  echo "== $name: ${cmd[*]}"
  start=$SECONDS
  rc=0
  timeout "$LIMIT" "${cmd[@]}" >"$tmp/stdout" 2>"$tmp/stderr" || rc=$?
  [ "$rc" -eq 0 ] || { failures=$((failures + 1)); tail -n 20 "$tmp/stderr"; }
  NAME=$name RC=$rc WALL=$((SECONDS - start)) TMP=$tmp SMI=$SMI DEST="$OUT_DIR/$name.json" \
  CMD="PYTHONPATH=. $(printf '%q ' "${cmd[@]}")" "$PY" - <<'EOF'
import json, os, subprocess
import torch

e = os.environ
stdout = open(f"{e['TMP']}/stdout").read()
stderr = open(f"{e['TMP']}/stderr").read()
try:
    result = json.JSONDecoder().raw_decode(stdout[stdout.index("{"):])[0]
except ValueError:
    result = None
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
except OSError:
    commit = None
commit = commit or e.get("GIT_COMMIT") or None  # a copied tree without .git: the caller says which commit
record = {"name": e["NAME"], "command": e["CMD"].strip(), "exit_code": int(e["RC"]), "wall_s": int(e["WALL"]),
          "nvidia_smi": e["SMI"], "torch_version": torch.__version__, "cuda_version": torch.version.cuda,
          "git_commit": commit, "result": result}
if int(e["RC"]) != 0 or result is None:
    record["error"] = (stderr or stdout)[-4000:]
with open(e["DEST"], "w") as f:
    json.dump(record, f, indent=2)
EOF
  rm -rf "$tmp"
done

# one line per benchmark (the numbers are in the JSON files)
NAMES="${names[*]}" DIR=$OUT_DIR "$PY" - <<'EOF'
import json, os
for name in os.environ["NAMES"].split():
    rec = json.load(open(os.path.join(os.environ["DIR"], name + ".json")))
    r = rec["result"]
    if r is None:
        print(f"{name:34s} FAILED (exit {rec['exit_code']}), see {name}.json")
    elif r["kind"] == "latency":
        base = r["baseline"]
        versus = f"DiT-only {base['median_s']:.3f} s, ratio {r['ratio']:.3f}, " if base else ""
        print(f"{name:34s} {r['median_s']:.3f} s  ({versus}{r['nfe_label']} evaluations, "
              f"{r['tflops']:.1f} TFLOP/s, compile {r['compile_s'] or 0:.0f} s)")
    else:
        mfu = f"MFU {r['mfu']:.1%}" if r["mfu"] is not None else "MFU -"
        print(f"{name:34s} {r['images_per_s']:.1f} img/s  ({r['tflops']:.1f} TFLOP/s, {mfu}, "
              f"compile {r['compile_s'] or 0:.0f} s)")
EOF
echo "results in $OUT_DIR; $failures failed"
exit "$failures"
