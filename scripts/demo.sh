#!/usr/bin/env bash
# The main job (`make demo`): train a tiny VQ tokenizer + raster (LlamaGen-style) generator on
# Fashion-MNIST, write class-conditional samples, and score them with the evaluator next to the
# real-data floor. Every step is a plain `argen` command you can rerun or change.
#   bash scripts/demo.sh [OUT]     (knobs: TOK_STEPS, GEN_STEPS, N_EVAL, THREADS, FEATURES)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/demo}
TOK_STEPS=${TOK_STEPS:-1500}
GEN_STEPS=${GEN_STEPS:-2000}
N_EVAL=${N_EVAL:-250}
THREADS=${THREADS:-2}
FEATURES=${FEATURES:-inception}
export OMP_WAIT_POLICY=PASSIVE
run() { echo "+ $*"; "$@"; }
mkdir -p "$OUT"
start=$(date +%s)

run python3 -m argen data fashion-mnist --split train --resolution 32 --grid "$OUT/data.png"
run python3 -m argen tokenizer train --preset vq-tiny --data fashion-mnist --steps "$TOK_STEPS" \
    --out "$OUT/tokenizer" --threads "$THREADS" --resume
run python3 -m argen train --preset fmnist-raster-tiny --data fashion-mnist --tokenizer "$OUT/tokenizer" \
    --steps "$GEN_STEPS" --out "$OUT/generator" --threads "$THREADS" --resume
run python3 -m argen sample "$OUT/generator" --per-class 10 --seed 0 --out "$OUT/samples" --grid "$OUT/samples.png" \
    --threads "$THREADS"
# FID/KID/precision/recall on TF-Inception (~0.5-2 s/image on 2 CPU cores): N_EVAL samples (equal per class)
# vs the first N_EVAL test images at the same 32 px framing, and the real-data floor at the same N.
# Small N biases FID upward; compare only numbers at the same N (the floor shows the scale).
per_class=$(( (N_EVAL + 9) / 10 ))
run python3 -m argen sample "$OUT/generator" --per-class "$per_class" --seed 1 --out "$OUT/eval-samples" \
    --batch-size 250 --threads "$THREADS"
run python3 -m argen eval --samples "$OUT/eval-samples" --ref fashion-mnist:test@32 --n "$N_EVAL" \
    --features "$FEATURES" --out "$OUT/metrics.json" --threads "$THREADS" --no-progress
run python3 -m argen eval --real-floor fashion-mnist@32 --n "$N_EVAL" --features "$FEATURES" \
    --out "$OUT/floor.json" --threads "$THREADS" --no-progress

python3 - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
out, secs = sys.argv[1], int(sys.argv[2])
m, f = json.load(open(f"{out}/metrics.json")), json.load(open(f"{out}/floor.json"))
def row(name, r):
    v = r["metrics"]
    return f"| {name} | " + " | ".join(f"{v[k]:.4g}" if isinstance(v.get(k), (int, float)) else "-" for k in keys) + " |"
keys = [k for k in m["metrics"] if isinstance(m["metrics"][k], (int, float))]
print(f"\nargen demo finished in {secs // 60} min {secs % 60} s. Outputs in {out}/:")
print("  data.png (training images), samples.png (10 per class), tokenizer/, generator/pipeline/,")
print("  metrics.json (samples vs test split), floor.json (train split vs test split)\n")
print("| set | " + " | ".join(keys) + " |")
print("|---|" + "---|" * len(keys))
print(row("generated vs test", m))
print(row("real train vs test (floor)", f))
PY
