"""Feature-extraction throughput of the evaluator (images/s), the cost that dominates FID on CPU.

    python benchmarks/eval_throughput.py --features inception --batch 32 64 --threads 1 2
    python benchmarks/eval_throughput.py --features lenet-fmnist --batch 256 --threads 1 2

Inputs are 28x28 uint8 images (Fashion-MNIST size), so the time includes the network's own resize
(Inception: TF1 bilinear to 299). One small warm-up batch, then `--repeats` timed batches per setting.
"""
from __future__ import annotations

import argparse
import time

import torch

from argen.metrics.features import load_feature_net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", default="inception")
    p.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--cache-dir", default="~/.cache/argen")
    args = p.parse_args()
    net = load_feature_net(args.features, cache_dir=args.cache_dir)
    g = torch.Generator().manual_seed(0)
    print(f"{net.name} (sha256 {net.weights_hash[:12]}...), input {args.size}x{args.size} uint8, "
          f"torch {torch.__version__}")
    print("| features | threads | batch | images/s | s/image |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for bs in args.batch:
            x = torch.randint(0, 256, (bs, 3, args.size, args.size), generator=g, dtype=torch.uint8)
            with torch.inference_mode():
                net(x[:4])  # warm-up (allocator, kernels)
                t0 = time.perf_counter()
                for _ in range(args.repeats):
                    net(x)
                dt = time.perf_counter() - t0
            n = bs * args.repeats
            print(f"| {net.name} | {threads} | {bs} | {n / dt:.2f} | {dt / n:.3f} |", flush=True)


if __name__ == "__main__":
    main()
