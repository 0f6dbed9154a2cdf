"""MAR sampling speed: the official `MAR.sample_tokens` + KL-16 decode vs `argen` (`pipe(labels)`) on the same
weights, with a parity check of the two decoders' first step.

The official code is not part of argen: pass a local checkout of LTH14/mar with `--official DIR` (it needs
timm 0.9.12; `--official-deps DIR` adds a folder to sys.path, e.g. one made by `pip install --no-deps
--target DIR timm==0.9.12`). Weights: official files (`--generator checkpoint-last.pth --tokenizer kl16.ckpt`),
or `--make-random DIR`, which builds MAR-B and KL-16 with the official code and random weights (seeded)
and saves them in the official file formats, so both implementations read the same files:

    python benchmarks/mar_speed.py --make-random runs/mar-b-random --official ~/mar --official-deps ~/mar-deps
    W="--generator runs/mar-b-random/checkpoint-last.pth --tokenizer runs/mar-b-random/kl16.ckpt"
    python benchmarks/mar_speed.py --impl official --official ~/mar --official-deps ~/mar-deps $W --batch 1 --steps 16
    python benchmarks/mar_speed.py --impl argen $W --batch 1 --steps 16 [--pack-weights]

One implementation per process. Settings default to the official MAR-B evaluation: cfg 2.9 with the linear
schedule, temperature 1, 100 diffusion steps, fp32, `--threads 2`. Prints one JSON line per run (best of
`--repeats` after a warm-up): seconds for the tokens and for the decode (with `--breakdown`, the
transformer's and the diffusion head's share of the tokens), wall and process CPU, and images/s
end to end (per wall second and per CPU-second: on a shared machine the CPU figures are the stable ones).
Set OMP_WAIT_POLICY=PASSIVE on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn


def _official(args):
    if not args.official:
        raise SystemExit("--official DIR (a checkout of LTH14/mar) is needed for this")
    for d in (args.official_deps, args.official):
        if d:
            sys.path.insert(0, str(Path(d).expanduser()))
    torch.Tensor.cuda = lambda self, *a, **k: self  # the official code hard-codes .cuda(): a no-op on CPU
    nn.Module.cuda = lambda self, *a, **k: self
    from models import mar as mar_models
    from models.vae import AutoencoderKL

    return mar_models, AutoencoderKL


def _official_models(args, mar_models, AutoencoderKL):
    model = mar_models.mar_base(img_size=256, vae_stride=16, patch_size=1, vae_embed_dim=16, mask_ratio_min=0.7,
                                label_drop_prob=0.1, class_num=1000, attn_dropout=0.1, proj_dropout=0.1,
                                buffer_size=64, diffloss_d=6, diffloss_w=1024,
                                num_sampling_steps=str(args.diffusion_steps), diffusion_batch_mul=4)
    vae = AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4))
    return model, vae


def make_random(args) -> None:
    """Official-shaped MAR-B + KL-16 with seeded random weights, saved as the official files."""
    mar_models, AutoencoderKL = _official(args)
    torch.manual_seed(args.seed)
    model, vae = _official_models(args, mar_models, AutoencoderKL)
    out = Path(args.make_random)
    out.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    torch.save({"model": sd, "model_ema": sd, "args": argparse.Namespace(num_sampling_steps=str(args.diffusion_steps),
                                                                         diffusion_batch_mul=4)},
               out / "checkpoint-last.pth")
    torch.save({"model": vae.state_dict()}, out / "kl16.ckpt")
    print(json.dumps({"wrote": str(out), "mar_params": sum(p.numel() for p in model.parameters())}))


SPLIT: dict[str, float] = {}  # --breakdown: wall seconds per part of the token sampling, summed over calls


def _timed(obj, name: str, part: str) -> None:
    """Wrap obj.name so its wall time adds to SPLIT[part] (same wrapper on both implementations)."""
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            SPLIT[part] = SPLIT.get(part, 0.0) + time.perf_counter() - t

    setattr(obj, name, wrapper)


def run_official(args, labels):
    mar_models, AutoencoderKL = _official(args)
    model, vae = _official_models(args, mar_models, AutoencoderKL)
    ckpt = torch.load(args.generator, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["model_ema"], strict=True)
    vae.load_state_dict(torch.load(args.tokenizer, map_location="cpu")["model"], strict=True)
    model.eval(), vae.eval()
    if args.breakdown:
        _timed(model, "forward_mae_encoder", "transformer_s")
        _timed(model, "forward_mae_decoder", "transformer_s")
        _timed(model.diffloss, "sample", "head_s")

    def once(seed):
        SPLIT.clear()
        torch.manual_seed(seed)  # the official sampler draws orders and noise from the global RNGs
        import numpy as np

        np.random.seed(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = model.sample_tokens(bsz=len(labels), num_iter=args.steps, cfg=args.cfg, cfg_schedule="linear",
                                     labels=torch.tensor(labels), temperature=args.temperature)
        t1, c1 = time.perf_counter(), time.process_time()
        images = vae.decode(tokens / 0.2325)
        return t1 - t0, time.perf_counter() - t1, images, c1 - c0, time.process_time() - c1

    return once


def run_argen(args, labels):
    from argen.interop.mar import convert_pipeline

    pipe, _ = convert_pipeline(args.tokenizer, args.generator, preset="mar-b")
    pipe = pipe.eval()
    if args.breakdown:
        _timed(pipe.generator, "condition", "transformer_s")
        _timed(pipe.generator.head, "sample", "head_s")
    knobs = {"num_steps": args.steps, "cfg": args.cfg, "cfg_schedule": "linear", "temperature": args.temperature,
             "diffusion_steps": args.diffusion_steps, "cfg_refresh": args.cfg_refresh,
             "token_refresh": args.token_refresh, "head_refresh": args.head_refresh}

    def once(seed):
        SPLIT.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = pipe.sample_tokens(labels, seed=seed, pack_weights=args.pack_weights, **knobs)
        t1, c1 = time.perf_counter(), time.process_time()
        images = pipe.decode(tokens)
        return t1 - t0, time.perf_counter() - t1, images, c1 - c0, time.process_time() - c1

    return once


def peak_gflops(threads: int) -> float:
    """fp32 GEMM throughput at MAR-B's head width with many rows (the best case for every linear layer here)."""
    a, w = torch.randn(3200, 1024), torch.randn(1024, 1024)
    with torch.inference_mode():
        for _ in range(3):
            a @ w
        t = time.perf_counter()
        for _ in range(10):
            a @ w
        return 10 * 2 * 3200 * 1024 * 1024 / (time.perf_counter() - t) / 1e9


def sampling_tflops(batch: int, steps: int, diffusion_steps: int = 100) -> tuple[float, float]:
    """Exact-arithmetic work of MAR-B sampling with CFG (TFLOP: transformer, diffusion head), counting every
    matmul: per step the encoder over buffer + known tokens and the decoder over all 320 slots (linears
    24 d^2 + attention 4 n d per token and block), and the head over each revealed token's two rows for every
    diffusion step (6 res blocks of 5 W^2 + the final layer's 2 W^2 MACs: AdaLN modulations and MLPs), with
    MAR's cosine schedule. No implementation can do less and stay exact."""
    L, P, d, depth, W = 256, 64, 768, 12, 1024
    rows, left, tr, head = 2 * batch, L, 0.0, 0.0
    for k in range(steps):
        n_enc, n_dec = P + L - left, P + L
        tr += rows * depth * sum(24 * d * d * n + 4 * n * n * d for n in (n_enc, n_dec)) + rows * 2 * d * d * n_enc
        masked = max(1, min(left - 1, math.floor(L * math.cos(math.pi / 2 * (k + 1) / steps))))
        n = left if k == steps - 1 else left - masked
        head += rows * n * (diffusion_steps * 2 * (6 * 5 * W * W + 2 * W * W + 48 * W) + 2 * d * W)
        left -= n
    return tr / 1e12, head / 1e12


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["argen", "official"], default="argen")
    p.add_argument("--official", help="a checkout of LTH14/mar (for --impl official / --make-random)")
    p.add_argument("--official-deps", help="extra sys.path entry holding timm 0.9.12")
    p.add_argument("--make-random", metavar="DIR", help="write random official-shaped weights to DIR and exit")
    p.add_argument("--generator", help="official checkpoint-last.pth")
    p.add_argument("--tokenizer", help="official kl16.ckpt")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=64, help="AR steps (num_iter)")
    p.add_argument("--diffusion-steps", type=int, default=100)
    p.add_argument("--cfg", type=float, default=2.9)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--pack-weights", action="store_true", help="argen: prepacked oneDNN weights while sampling")
    p.add_argument("--cfg-refresh", type=int, default=1,
                   help="argen, approximate: run the unconditional rows every N-th step (LazyMAR-style; 1 = exact)")
    p.add_argument("--token-refresh", type=int, default=1,
                   help="argen, approximate: run every position through the transformer every N-th step, in between "
                        "only the new and the predicted tokens (LazyMAR-style token cache; 1 = exact)")
    p.add_argument("--head-refresh", type=int, default=1,
                   help="argen, approximate: the whole diffusion head every N-th denoising step, in between the "
                        "conditional rows and the outer blocks only (LazyMAR-style head cache, which uses 7; 1 = exact)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (allocator, oneDNN kernels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak", action="store_true",
                   help="print this machine's fp32 GEMM GFLOP/s (3200x1024x1024), the exact work of sampling at "
                        "--batch/--steps and the seconds that work takes at that peak (a floor), and exit")
    p.add_argument("--breakdown", action="store_true",
                   help="also report the seconds spent in the transformer and in the diffusion head (last run)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.peak:
        gflops = peak_gflops(args.threads)
        tr, head = sampling_tflops(args.batch, args.steps, args.diffusion_steps)
        print(json.dumps({"threads": args.threads, "gemm_gflops": round(gflops, 1), "batch": args.batch,
                          "steps": args.steps, "transformer_tflop": round(tr, 2), "head_tflop": round(head, 2),
                          "floor_tokens_s": round((tr + head) * 1e3 / gflops, 1)}))
        return 0
    if args.make_random:
        make_random(args)
        return 0
    if not (args.generator and args.tokenizer):
        raise SystemExit("give --generator checkpoint-last.pth --tokenizer kl16.ckpt (or --make-random DIR first)")
    labels = [(207 + 100 * i) % 1000 for i in range(args.batch)]
    once = (run_official if args.impl == "official" else run_argen)(args, labels)
    with torch.inference_mode():
        for w in range(args.warmup):
            once(args.seed + 1000 + w)
        runs = [(*once(args.seed + r), dict(SPLIT)) for r in range(args.repeats)]
    gen_s, dec_s, images, gen_cpu, dec_cpu, split = min(runs, key=lambda r: r[0] + r[1])
    assert images.shape == (args.batch, 3, 256, 256) and torch.isfinite(images).all()
    total = gen_s + dec_s
    print(json.dumps({"impl": args.impl, "batch": args.batch, "steps": args.steps,
                      "diffusion_steps": args.diffusion_steps, "cfg": args.cfg, "threads": args.threads,
                      "pack_weights": args.pack_weights if args.impl == "argen" else None,
                      "cfg_refresh": args.cfg_refresh if args.impl == "argen" else None,
                      "token_refresh": args.token_refresh if args.impl == "argen" else None,
                      "head_refresh": args.head_refresh if args.impl == "argen" else None,
                      "tokens_s": round(gen_s, 2), "decode_s": round(dec_s, 2),
                      "images_per_s": round(args.batch / total, 4), "tokens_cpu_s": round(gen_cpu, 2),
                      "decode_cpu_s": round(dec_cpu, 2), "images_per_cpu_s": round(args.batch / (gen_cpu + dec_cpu), 4),
                      **{k: round(v, 2) for k, v in split.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
