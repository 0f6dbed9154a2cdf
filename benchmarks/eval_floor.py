"""The evaluator's real-data floor: a dataset's train split against its test split.

Real images against real images give the smallest FID/KID (and the largest precision/recall) a generator
can hope for at this N and reference; report generator numbers next to this floor.

    python benchmarks/eval_floor.py --features inception --n 1000 5000 --threads 2
    python benchmarks/eval_floor.py --features lenet-fmnist --n 1000 5000 10000

Prints one markdown row per N (FD, KD mean ± std, precision, recall, seconds) and writes each full result
(protocol included) to runs/eval/floor-<dataset>-<features>-n<N>.json. Features of each split are
cached under ~/.cache/argen/ref_stats/, so reruns and larger N reuse earlier work.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from argen.metrics.evaluator import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--features", default="inception")
    p.add_argument("--n", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", default="~/.cache/argen")
    p.add_argument("--out-dir", default="runs/eval")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for n in args.n:
        t0 = time.time()
        out = Path(args.out_dir) / f"floor-{args.dataset}-{args.features}-n{n}.json"
        r = evaluate(f"{args.dataset}:train", f"{args.dataset}:test", features=args.features, n=n,
                     cache_dir=Path(args.cache_dir).expanduser(), batch_size=args.batch_size, out=out, progress=True)
        dt = time.time() - t0
        m, names, pr = r["metrics"], r["protocol"]["metric_names"], r["protocol"]
        hits = f"cache train={pr['samples']['cache_hit']} test={pr['reference']['cache_hit']}"
        row = (f"| {args.features} | {n} | {m[names['fd']]:.3f} | "
               f"{m[names['kd_mean']]:.5f} ± {'undefined' if m[names['kd_std']] is None else format(m[names['kd_std']], '.5f')} | {m[names['precision']]:.4f} | {m[names['recall']]:.4f} | {dt:.0f} s ({hits}) |")
        rows.append(row)
        print(r["summary"], flush=True)
        print(f"wrote {out}", flush=True)
    print(f"\nfeature net {r['protocol']['feature_net']} sha256 {r['protocol']['feature_weights_sha256']}, "
          f"resize: {r['protocol']['resize']}, KID subsets {r['protocol']['kid_subsets']} x "
          f"{r['protocol']['kid_subset_size']}, seed {r['protocol']['seed']}, torch {torch.__version__}, "
          f"threads {args.threads}")
    print("| features | N (train vs test) | FD | KD | precision | recall | time |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
