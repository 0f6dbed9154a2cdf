"""Training throughput by strategy: one process vs torchrun DDP vs torchrun FSDP2, same global batch, same data.

    python benchmarks/distributed_train.py --tokenizer runs/bench-recon/fashion-mnist-vq/tokenizer \
        --nproc 2 --steps 200 --out runs/bench-dist

Trains `--preset` (default fmnist-raster-tiny) with `argen train` on Fashion-MNIST in each configuration below,
from the same token cache (encoded once, not timed), and prints one JSON line per run: samples/s (the mean of the
logged windows after the first, which holds the warm-up), wall seconds of the process, and the final loss. Every
run sees the same global batch (`--batch-size` per step in total: split over the ranks under torchrun), so the
losses are comparable (the same data stream, sampler.py; the floating-point order of the reductions differs).

    single-1t     one process, 1 thread
    single-Nt     one process, N threads (N = --nproc)
    ddp-N         torchrun --nproc_per_node N --strategy ddp, 1 thread per rank (gloo on CPU)
    fsdp-N        torchrun --nproc_per_node N --strategy fsdp, 1 thread per rank

On CPU this measures the strategies' overhead (gloo all-reduce / all-gather of a tiny model), not a speed-up: the
point of DDP and FSDP is many GPUs (scripts/gpu_check.sh runs the CUDA path).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run(name: str, cmd: list[str], threads: int, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / name / "log.jsonl").read_text().splitlines()]
    speeds = [r["throughput"] for r in rows[1:] if r.get("throughput")]
    return {"run": name, "samples_per_s": round(sum(speeds) / len(speeds), 1) if speeds else None,
            "wall_s": round(wall, 1), "final_loss": rows[-1]["loss"], "steps": rows[-1]["step"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="a trained tokenizer directory (e.g. a vq-tiny run)")
    p.add_argument("--preset", default="fmnist-raster-tiny")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64, help="global batch per optimizer step")
    p.add_argument("--max-images", type=int, default=10000)
    p.add_argument("--runs", nargs="+", default=["single-1t", "single-Nt", "ddp-N", "fsdp-N"])
    p.add_argument("--out", default="runs/bench-dist")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = args.nproc
    if args.batch_size % n:
        raise SystemExit(f"--batch-size {args.batch_size} must split evenly over --nproc {n}")
    argen = [sys.executable, "-m", "argen"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m", "argen"]
    cache = out / "tokens"
    common = ["train", "--preset", args.preset, "--tokenizer", args.tokenizer, "--steps", str(args.steps),
              "--max-images", str(args.max_images), "--cache", str(cache), "--no-progress", "--device", "cpu",
              "--samples-per-class", "0", "--set", "train.ckpt_every=0", "--set", "train.log_every=20"]
    plans = {
        "single-1t": (argen, 1, args.batch_size, ["--strategy", "single"]),
        "single-Nt": (argen, n, args.batch_size, ["--strategy", "single"]),
        "ddp-N": (torchrun, 1, args.batch_size // n, ["--strategy", "ddp"]),
        "fsdp-N": (torchrun, 1, args.batch_size // n, ["--strategy", "fsdp"]),
    }
    for key in args.runs:
        launcher, threads, batch, extra = plans[key]
        name = key.replace("N", str(n))
        if (out / name).exists():
            raise SystemExit(f"{out / name} exists: choose a new --out")
        cmd = [*launcher, *common, "--batch-size", str(batch), "--out", str(out / name), *extra]
        print(json.dumps({**run(name, cmd, threads, out), "threads_per_process": threads,
                          "batch_per_process": batch}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
