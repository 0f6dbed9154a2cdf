#!/usr/bin/env bash
# GPU check of the CUDA path (issue 13), for whenever a GPU is available: under 8 minutes on one GPU (the
# steps' time limits add up to 480 s; expected well below):
#   1. CUDA bf16 training: a tokenizer (vq-tiny, GAN phases) and a generator (fmnist-raster-tiny), one process
#   2. FSDP2 on 1 rank under torchrun (bf16 MixedPrecisionPolicy, activation checkpointing, DCP checkpoints),
#      resumed in one process from the DCP checkpoint; DDP on 1 rank (NCCL) for the tokenizer's GAN phases
#   3. FSDP mixed precision as the loop sees it: bf16 parameters inside forward, fp32 master weights and EMA
#   4. sampling speed: `argen sample` (512 images) and `argen bench sample` (llamagen-b, random weights)
# Usage: scripts/gpu_check.sh [OUT]     (default runs/gpu_check). Results: OUT/gpu_check.json + OUT/*.log.
# Needs Fashion-MNIST (scripts/setup.sh installs it). Exit status 0 only when every check passed.
# DEVICE=cpu scripts/gpu_check.sh runs the same plumbing on CPU with 10x fewer steps (fp32, gloo): a check
# of the script itself on a machine without a GPU, not of the CUDA path.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
S=1; B=1; IMAGES=()
L=1  # time limits x L
if [ "$DEVICE" = cpu ]; then S=10; B=4; L=3; IMAGES=(--max-images 512); fi  # steps / S, batch sizes / B
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
rm -rf "$OUT"
mkdir -p "$OUT"
T0=$(date +%s)

log() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*"; }
step() {  # step NAME SECONDS CMD...: run with a time limit, keep its output in OUT/NAME.log
  local name=$1 limit=$2; shift 2
  log "$name"
  local start=$(date +%s)
  if ! timeout $((limit * L)) "$@" >"$OUT/$name.log" 2>&1; then
    log "FAILED: $name (see $OUT/$name.log)"; tail -20 "$OUT/$name.log"; exit 1
  fi
  echo "$name $(( $(date +%s) - start ))" >>"$OUT/durations.txt"
}
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node 1)

DEVICE=$DEVICE $PY - <<'EOF' | tee "$OUT/env.log"
import os, torch
if os.environ["DEVICE"] == "cpu":
    print(f"torch {torch.__version__}, CPU dry run (DEVICE=cpu): fp32, gloo")
elif not torch.cuda.is_available():
    raise SystemExit("no CUDA device: this script checks the GPU path; run it on a machine with a GPU")
else:
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
          f"bf16 {torch.cuda.is_bf16_supported()}, nccl {torch.distributed.is_nccl_available()}")
EOF

# 1. one process, CUDA, bf16 autocast (the recipes' default precision on CUDA)
step tokenizer 90 $PY -m argen tokenizer train --preset vq-tiny --steps $((200 / S)) --batch-size $((64 / B)) \
  --device "$DEVICE" --out "$OUT/vq" --no-progress
GEN=(--preset fmnist-raster-tiny --tokenizer "$OUT/vq" --batch-size $((128 / B)) --device "$DEVICE" --no-progress
     "${IMAGES[@]}")
step generator 90 $PY -m argen train "${GEN[@]}" --steps $((300 / S)) --out "$OUT/ar"

# 2. FSDP on one rank under torchrun, then resumed by one plain process from its DCP checkpoint
FSDP_STEPS=$((100 / S)); RESUMED=$((150 / S))
step fsdp 60 "${TORCHRUN[@]}" -m argen train "${GEN[@]}" --steps $FSDP_STEPS --cache "$OUT/ar/tokens" \
  --strategy fsdp --activation-checkpointing --out "$OUT/ar-fsdp" --set train.ckpt_every=$((50 / S))
test -f "$OUT/ar-fsdp/checkpoints/$(printf step-%08d $FSDP_STEPS)/.metadata"
step fsdp_resume 45 $PY -m argen train "${GEN[@]}" --steps $RESUMED --cache "$OUT/ar/tokens" \
  --out "$OUT/ar-fsdp" --resume
step ddp_gan 45 "${TORCHRUN[@]}" -m argen tokenizer train --preset vq-tiny --steps 20 --batch-size $((32 / B)) \
  --strategy ddp --device "$DEVICE" --out "$OUT/vq-ddp" --no-progress --set loss.disc_start=10

# 3. what FSDP's mixed precision does inside the loop
cat >"$OUT/fsdp_precision.py" <<'EOF'
import os, sys
import torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from argen.train import FSDP, TrainConfig, Trainer
from argen.types import LossOutput
seen = []
class Task(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 10))
    def forward(self, batch, ctx):
        x, y = batch
        seen.append(self.net[0].weight.dtype)
        return LossOutput(F.cross_entropy(self.net(x), y))
cuda = sys.argv[2] != "cpu"
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(dev)
g = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(512, 64, generator=g), torch.randint(0, 10, (512,), generator=g))
cfg = TrainConfig(steps=20, batch_size=64, lr=1e-3, precision="bf16", ema_decay=0.99, log_every=5, ckpt_every=0)
tr = Trainer(cfg, Task().to(dev), data, sys.argv[1], distributed=FSDP(), device=dev)
rec = tr.fit()
master = {p.dtype for p in tr.task.parameters()}
ema = {t.dtype for t in tr.ema.shadow.values()}
assert set(seen) == {torch.bfloat16 if cuda else torch.float32}, seen[:3]  # CPU always trains in fp32
assert master == {torch.float32} and ema == {torch.float32}, (master, ema)
assert rec[-1]["loss"] < rec[0]["loss"], [r["loss"] for r in rec]
print(f"{'bf16' if cuda else 'fp32 (CPU)'} params in forward, fp32 master weights and EMA; loss "
      f"{rec[0]['loss']:.3f} -> {rec[-1]['loss']:.3f}")
tr.dist.close()
EOF
step fsdp_precision 45 "${TORCHRUN[@]}" "$OUT/fsdp_precision.py" "$OUT/precision" "$DEVICE"

# 4. sampling speed
step sample 45 $PY -m argen sample "$OUT/ar" --num-images $((512 / S)) --batch-size 128 --seed 0 \
  --device "$DEVICE" --out "$OUT/samples"
BENCH=llamagen-b; [ "$DEVICE" = cpu ] && BENCH=llamagen-tiny
step bench 60 $PY -m argen bench sample --preset $BENCH --batch 1,16 --cfg 4 --device "$DEVICE" \
  --repeats 2 --json "$OUT/bench.jsonl"

$PY - "$OUT" "$RESUMED" <<'EOF'
import json, re, sys, time
from pathlib import Path
out = Path(sys.argv[1])
def log(run):
    return [json.loads(l) for l in (out / run / "log.jsonl").read_text().splitlines()]
def throughput(run):
    rows = [r["throughput"] for r in log(run)[1:] if r.get("throughput")]  # the first window includes warm-up
    return round(sum(rows) / len(rows), 1) if rows else None
sample = re.search(r"\(([\d.]+) images/s\)", (out / "sample.log").read_text())
result = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S"), "env": (out / "env.log").read_text().strip(),
    "durations_s": dict(line.split() for line in (out / "durations.txt").read_text().splitlines()),
    "tokenizer": {"final_loss": log("vq")[-1]["loss"], "samples_per_s": throughput("vq")},
    "generator_bf16": {"final_loss": log("ar")[-1]["loss"], "samples_per_s": throughput("ar")},
    "fsdp_1_rank": {"final_loss": log("ar-fsdp")[-1]["loss"], "steps": log("ar-fsdp")[-1]["step"],
                    "samples_per_s": throughput("ar-fsdp")},
    "ddp_gan": {"final_loss": log("vq-ddp")[-1]["loss"],
                "discriminator_loss": log("vq-ddp")[-1]["metrics"].get("discriminator/loss")},
    "fsdp_precision": (out / "fsdp_precision.log").read_text().strip().splitlines()[-1],
    "sample_images_per_s": float(sample.group(1)) if sample else None,
    "bench": [json.loads(l) for l in (out / "bench.jsonl").read_text().splitlines()],
}
assert result["fsdp_1_rank"]["steps"] == int(sys.argv[2]), "the FSDP run did not resume to its last step"
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: v for k, v in result.items() if k != "bench"}, indent=2))
EOF
log "all checks passed in $(( $(date +%s) - T0 )) s; results in $OUT/gpu_check.json"
