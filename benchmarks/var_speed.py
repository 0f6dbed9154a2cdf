"""Next-scale (VAR) sampling speed on CPU: time per scale, decoder time and total per batch.

    python benchmarks/var_speed.py --pipeline DIR --batch 1          # a converted VAR pipeline (argen convert var)
    python benchmarks/var_speed.py --preset imagenet-var-d16 --batch 4  # random weights of a preset
    python benchmarks/var_speed.py --pipeline DIR --prune 0.4 0.5       # FastVAR-style pruning (approximate)

Settings follow VAR's FID protocol unless overridden: cfg 1.5 linear in the scale index (argen cfg 2.5,
cfg_schedule linear_scale), top-k 900, top-p 0.96, fp32, decode included. Prints one JSON line per timed run
(after one untimed warm-up) with per-scale seconds (callback timestamps), decoder seconds and the total.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import argen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pipeline", help="saved pipeline directory (e.g. from `argen convert var`)")
    src.add_argument("--preset", help="pipeline preset with random weights, e.g. imagenet-var-d16")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1, help="timed runs after one warm-up")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cfg", type=float, default=2.5, help="argen cfg (VAR's cfg + 1)")
    ap.add_argument("--top-k", type=int, default=900)
    ap.add_argument("--top-p", type=float, default=0.96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prune", type=float, nargs="+", default=(),
                    help="FastVAR-style pruning of the last scales (approximate; default: exact sampling)")
    ap.add_argument("--pack-weights", action="store_true", help="the opt-in prepacked-weight CPU path")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    pipe = argen.load(a.pipeline) if a.pipeline else argen.create(a.preset)
    pipe.eval()
    load_s = time.perf_counter() - t0
    labels = (torch.arange(a.batch) * 97) % max(pipe.conditioner.num_classes, 1)
    for run in range(a.warmup + a.runs):
        marks = []
        start = time.perf_counter()
        tokens = pipe.sample_tokens(labels, cfg=a.cfg, cfg_schedule="linear_scale", top_k=a.top_k, top_p=a.top_p,
                                    temperature=1.0, seed=a.seed + run, prune=tuple(a.prune),
                                    pack_weights=a.pack_weights,
                                    callback=lambda step, n: marks.append(time.perf_counter()))
        t_tok = time.perf_counter()
        images = pipe.decode(tokens)
        end = time.perf_counter()
        assert torch.isfinite(images).all()
        if run < a.warmup:
            continue
        per_scale = [m - p for p, m in zip([start] + marks[:-1], marks)]
        print(json.dumps({"impl": "argen", "prune": list(a.prune), "pack": a.pack_weights, "batch": a.batch, "threads": torch.get_num_threads(),
                          "total_s": round(end - start, 3), "decoder_s": round(end - t_tok, 3),
                          "transformer_s": round(t_tok - start, 3), "per_scale_s": [round(x, 3) for x in per_scale],
                          "load_s": round(load_s, 2), "torch": torch.__version__, "machine": platform.machine()}),
              flush=True)


if __name__ == "__main__":
    main()
