"""Next-scale (VAR, arXiv:2404.02905) vs raster (LlamaGen, arXiv:2406.06525) vs masked (MaskGIT, arXiv:2202.04200)
vs MAR (continuous tokens + diffusion head, arXiv:2406.11838), class-conditional on Fashion-MNIST or emoji, at equal
generator parameter count, equal generator CPU time and equal tokenizer budget.

    python benchmarks/paradigms.py train --cpu-seconds 90 --max-images 10000 --out runs/bench-paradigms
    python benchmarks/paradigms.py eval --n 1000 --features lenet-fmnist --out runs/bench-paradigms
    python benchmarks/paradigms.py speed --grids 4 8 16 --batch 16 --out runs/bench-paradigms
    python benchmarks/paradigms.py eval --paradigms next-scale --prune 0.5 ...   # FastVAR-style pruning's cost in quality
    python benchmarks/paradigms.py eval --paradigms mar --mar-steps 16 --token-refresh 4 ...  # LazyMAR-style caches'

Tokenizers: the `vq-tiny` / `msvq-tiny` / `vae-tiny` runs of benchmarks/reconstruction.py (same recipe, same CPU
budget), looked up in `--recon` (default runs/bench-recon/<data>-<family>/tokenizer); train them there first.
Generators: `fmnist-var-tiny` unchanged, and `fmnist-raster-tiny`, `fmnist-maskgit-tiny`, `fmnist-mar-tiny` widened
with --set overrides (see PARADIGMS) so that every parameter count (generator + class table) matches var-tiny's
0.97M within 1%. On emoji the same presets take emoji's 10 categories (the recipes fit the class count). Each trains in its own single-threaded subprocess
through argen's Trainer with the `argen train` optimizer (AdamW, betas 0.9/0.95, wd 0.05, clip 1) but a short-budget
schedule (default lr 6e-4, batch 32, 20 warm-up steps, then constant: the number of steps is not known in
advance, and a CPU minute is only a few hundred steps): it stops at the first
multiple of `--chunk` steps after `--cpu-seconds` of process CPU time (encoding the token cache is not
counted; it is reported). `eval` samples n/10 images per class (seed 0, each pipeline's default cfg 2.0 /
schedule, top-k off) and scores them with `argen eval` against the test split; a real-data row (train images
vs test images, same N) gives the metric's floor. `speed` times sampling with random weights at several
token grids (f4 tokenizers, so grid g = 4g px; next-scale uses doubling scales 1,2,...,g), reporting images
per CPU-second of the process as well as per wall second (the machine is shared: CPU time is the stable one).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PARADIGMS = {
    # llamagen-tiny is 64 wide x 2 layers (0.16M); var-tiny is 128 wide x 3 layers with AdaLN (0.97M trainable).
    # Widen the raster model to 128 x 3 and its SwiGLU hidden 512 -> 608 to match var-tiny's count.
    "raster": {"preset": "fmnist-raster-tiny", "family": "vq",
               "set": ["generator.dim=128", "generator.depth=3", "generator.num_heads=4", "generator.ffn_hidden=608"]},
    "next-scale": {"preset": "fmnist-var-tiny", "family": "msvq", "set": []},
    # maskgit-tiny is 64 x 2; at 128 x 3 with MLP ratio 7 it has 0.967M.
    "masked": {"preset": "fmnist-maskgit-tiny", "family": "vq",
               "set": ["generator.dim=128", "generator.depth=3", "generator.num_heads=4", "generator.mlp_ratio=7.0"]},
    # mar-tiny is 64 wide, 2 + 2 blocks, a 2 x 64 head; at 128 wide, MLP ratio 3, a 2 x 128 head it has 0.973M.
    "mar": {"preset": "fmnist-mar-tiny", "family": "vae",
            "set": ["generator.dim=128", "generator.encoder_depth=2", "generator.decoder_depth=2",
                    "generator.num_heads=4", "generator.mlp_ratio=3.0", "generator.head.width=128",
                    "generator.head.depth=2", "generator.head.cond_dim=128"]},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _child(*argv: str, log: Path) -> int:
    with open(log, "a") as fh:
        return subprocess.call([sys.executable, __file__, *argv], stdout=fh, stderr=fh, env=ENV)


def _param_count(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def train_one(paradigm: str, args: argparse.Namespace) -> dict:
    """Train one paradigm's generator for the CPU budget, in this (single-threaded) process; save a pipeline."""
    import torch

    torch.set_num_threads(1)
    from argen import registry
    from argen.data import TokenCacheDataset, build_token_cache, fingerprint, load_dataset
    from argen.generators import GeneratorTask
    from argen.pipeline import Pipeline
    from argen.saving import load
    from argen.train import Trainer
    from argen.train.recipes import FirstN, fit_x0_clip, generator_configs

    spec = PARADIGMS[paradigm]
    out = Path(args.out) / f"{args.data}-{paradigm}"
    tok_dir = Path(args.recon) / f"{args.data}-{spec['family']}" / "tokenizer"
    if not tok_dir.is_dir():
        raise SystemExit(f"{tok_dir} missing: run benchmarks/reconstruction.py --families {spec['family']} first")
    tokenizer = load(tok_dir).eval()
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    dataset = load_dataset(args.data, split="train", resolution=tokenizer.config.resolution)
    if args.max_images:
        dataset = FirstN(dataset, args.max_images)
    cfg, train_cfg, _ = generator_configs(spec["preset"], tokenizer, dataset, list(spec["set"]), steps=1_000_000,
                                          batch_size=args.batch_size, lr=args.lr, seed=0)
    train_cfg = train_cfg.replace(schedule="constant", warmup_steps=args.warmup, log_every=args.chunk, ckpt_every=0,
                                  keep_checkpoints=1)
    t0 = time.process_time()
    build_token_cache(tokenizer.encode, dataset, out / "tokens", batch_size=128, tokenizer_hash=fingerprint(tokenizer))
    encode_cpu = time.process_time() - t0
    tokens = TokenCacheDataset(out / "tokens", tokenizer_hash=fingerprint(tokenizer))
    cfg, _ = fit_x0_clip(cfg, tokens)  # as `argen train` does: MAR's head bounded by the latents' range
    torch.manual_seed(0)
    generator = registry.build(cfg.generator)
    conditioner = registry.build(cfg.conditioner)
    generator.bind_tokenizer(tokenizer)
    trainer = Trainer(train_cfg, GeneratorTask(generator, conditioner), tokens, out, resume=False)
    start, records = time.process_time(), []
    while time.process_time() - start < args.cpu_seconds:
        records += trainer.fit(stop_at=trainer.step + args.chunk) or []
    cpu = time.process_time() - start
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.ema_module)
    Pipeline.from_parts(tokenizer, conditioner, generator, sampling=cfg.sampling).eval().save(out / "pipeline")
    last = records[-1] if records else {}
    res = {"paradigm": paradigm, "data": args.data, "preset": spec["preset"], "set": spec["set"],
           "generator_params": _param_count(generator) + _param_count(conditioner), "tokens_per_image": cfg.generator.num_tokens,
           "steps": trainer.step, "batch_size": train_cfg.batch_size, "train_cpu_s": round(cpu, 1),
           "encode_cpu_s": round(encode_cpu, 1), "train_images": len(dataset), "final_loss": last.get("loss"),
           "final_bits_per_token": last.get("metrics", {}).get("bits_per_token")}
    (out / "train.json").write_text(json.dumps(res, indent=2))
    return res


MAR_CACHES = (("token_refresh", "tok"), ("head_refresh", "head"), ("cfg_refresh", "cfg"))


def _sampler_options(paradigm: str, args: argparse.Namespace) -> dict:
    """The sampler options this eval measures: FastVAR-style pruning (next-scale), LazyMAR-style caches, the AR step
    count and the x0 bound (MAR); empty for the trained pipeline's own sampling."""
    if paradigm == "next-scale" and args.prune:
        return {"prune": tuple(args.prune)}
    if paradigm != "mar":
        return {}
    opts = {"num_steps": args.mar_steps} if args.mar_steps else {}
    if args.x0_clip is not None:
        opts["x0_clip"] = args.x0_clip
    return {**opts, **{k: getattr(args, k) for k, _ in MAR_CACHES if getattr(args, k) > 1}}


def _variant(paradigm: str, args: argparse.Namespace) -> str:
    """'' for exact sampling with the preset's steps; '-prune0.5', '-steps16-tok4-head7' etc. otherwise."""
    opts = _sampler_options(paradigm, args)
    if "prune" in opts:
        return f"-prune{'-'.join(map(str, opts['prune']))}"
    short = {"num_steps": "steps", "x0_clip": "clip", **dict(MAR_CACHES)}
    return "".join(f"-{short[k]}{v}" for k, v in opts.items())


def sample_one(paradigm: str, args: argparse.Namespace) -> dict:
    """n/10 images per class from the trained pipeline, saved as samples[<variant>].npz (uint8 N x H x W x 3)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from argen.pipeline import Pipeline

    out = Path(args.out) / f"{args.data}-{paradigm}"
    pipe = Pipeline.load(out / "pipeline").eval()
    n_cls = pipe.conditioner.num_classes
    per_class = args.n // n_cls
    labels = [c for c in range(n_cls) for _ in range(per_class)]
    extra = _sampler_options(paradigm, args)
    chunks, t0, w0 = [], time.process_time(), time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(labels), args.batch):
            chunks.append(pipe(labels[i:i + args.batch], seed=args.seed + i, **extra))
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    images = torch.cat(chunks)  # (N, 3, H, W) in [-1, 1]
    arr = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    v = _variant(paradigm, args)
    np.savez(out / f"samples{v}.npz", arr_0=arr)
    res = {"n": len(labels), "sample_cpu_s": round(cpu, 1), "sample_wall_s": round(wall, 1), **extra}
    (out / f"sample{v}.json").write_text(json.dumps(res))
    return res


def speed_one(paradigm: str, grid: int, args: argparse.Namespace) -> dict:
    """Images per CPU-second / wall second of sampling batch `args.batch` with random weights at a g x g grid."""
    import torch

    torch.set_num_threads(1)
    from argen import registry
    from argen.config import apply_overrides
    from argen.presets import get_config

    spec = PARADIGMS[paradigm]
    over = [s for s in spec["set"]] + [f"tokenizer.resolution={4 * grid}"]
    if paradigm != "next-scale":
        over += [f"generator.scales=[[{grid},{grid}]]"]
    else:
        sizes, s = [], 1
        while s < grid:
            sizes.append(s)
            s *= 2
        scales = "[" + ",".join(f"[{k},{k}]" for k in sizes + [grid]) + "]"
        over += [f"generator.scales={scales}", f"generator.quantizer.scales={scales}", f"tokenizer.quantizer.scales={scales}"]
    over += [f"tokenizer.net.attn_resolutions=[{grid}]"]  # attention at the lowest level, as in the 32 px preset
    cfg = apply_overrides(get_config(spec["preset"]), over)
    torch.manual_seed(0)
    pipe = registry.build(cfg).eval()
    labels = [i % 10 for i in range(args.batch)]
    with torch.inference_mode():
        pipe(labels, seed=0)  # warm-up
        best = None
        for r in range(args.repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            tokens = pipe.sample_tokens(labels, seed=r + 1)
            c1 = time.process_time()
            images = pipe.decode(tokens)
            c2, w2 = time.process_time(), time.perf_counter()
            assert torch.isfinite(images).all()
            run = {"gen_cpu_s": c1 - c0, "total_cpu_s": c2 - c0, "wall_s": w2 - w0}
            best = run if best is None or run["total_cpu_s"] < best["total_cpu_s"] else best
    return {"paradigm": paradigm, "grid": grid, "resolution": 4 * grid, "tokens": cfg.generator.num_tokens,
            "steps": _sampling_steps(paradigm, cfg),
            "generator_params": _param_count(pipe.generator), "batch": args.batch, "cfg": cfg.sampling.cfg,
            "img_per_cpu_s": round(args.batch / best["total_cpu_s"], 2),
            "img_per_cpu_s_generator_only": round(args.batch / best["gen_cpu_s"], 2),
            "img_per_wall_s": round(args.batch / best["wall_s"], 2)}


def _sampling_steps(paradigm: str, cfg) -> int:
    """Forward passes per image: one per scale (VAR), per token (raster), or the preset's step count (masked, MAR)."""
    if paradigm == "next-scale":
        return len(cfg.generator.scales)
    if paradigm in ("masked", "mar"):
        return cfg.generator.num_steps
    return cfg.generator.num_tokens


def _table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "-")) for _, k in cols) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", nargs="?", default="all", choices=["train", "eval", "speed", "all"])
    p.add_argument("--paradigms", nargs="+", default=list(PARADIGMS), choices=list(PARADIGMS))
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--recon", default="runs/bench-recon", help="output directory of benchmarks/reconstruction.py")
    p.add_argument("--cpu-seconds", type=float, default=90.0, help="generator training budget (process CPU time)")
    p.add_argument("--chunk", type=int, default=10, help="steps between budget checks")
    p.add_argument("--lr", type=float, default=6e-4, help="generator learning rate (constant after warm-up)")
    p.add_argument("--batch-size", type=int, default=32, help="generator training batch")
    p.add_argument("--warmup", type=int, default=20, help="generator warm-up steps")
    p.add_argument("--max-images", type=int, default=10000, help="training images encoded into the token cache")
    p.add_argument("--n", type=int, default=1000, help="samples (n/10 per class) and reference images")
    p.add_argument("--features", default="lenet-fmnist", help="lenet-fmnist (FD_lenet) or inception (FID)")
    p.add_argument("--batch", type=int, default=16, help="images per sampling call")
    p.add_argument("--grids", nargs="+", type=int, default=[4, 8, 16])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prune", type=float, nargs="+", default=None,
                   help="eval: sample next-scale with this FastVAR-style pruning (fractions skipped at the last scales)")
    p.add_argument("--mar-steps", type=int, default=0, help="eval: MAR's AR steps (0: the preset's)")
    p.add_argument("--x0-clip", type=float, default=None,
                   help="eval: MAR's bound on the predicted clean token (default: the trained pipeline's; 0: off)")
    for name, _ in MAR_CACHES:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=1,
                       help=f"eval: sample MAR with {name} (approximate; 1: exact)")
    p.add_argument("--out", default="runs/bench-paradigms")
    p.add_argument("--one", nargs=2, metavar=("WHAT", "PARADIGM"), help=argparse.SUPPRESS)
    p.add_argument("--grid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.one:
        what, paradigm = args.one
        if what == "train":
            print(json.dumps(train_one(paradigm, args)))
        elif what == "sample":
            print(json.dumps(sample_one(paradigm, args)))
        else:
            res = speed_one(paradigm, args.grid, args)
            with open(out / "speed.jsonl", "a") as fh:
                fh.write(json.dumps(res) + "\n")
            print(json.dumps(res))
        return 0
    common = ["--data", args.data, "--recon", args.recon, "--cpu-seconds", str(args.cpu_seconds), "--chunk",
              str(args.chunk), "--lr", str(args.lr), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
              "--max-images", str(args.max_images), "--n", str(args.n), "--batch", str(args.batch),
              "--repeats", str(args.repeats), "--seed", str(args.seed), "--out", str(out),
              *(["--prune", *map(str, args.prune)] if args.prune else []), "--mar-steps", str(args.mar_steps),
              *(["--x0-clip", str(args.x0_clip)] if args.x0_clip is not None else []),
              *[a for k, _ in MAR_CACHES for a in ("--" + k.replace("_", "-"), str(getattr(args, k)))]]
    if args.phase in ("train", "all"):  # both paradigms at once: same contention for both
        procs = [subprocess.Popen([sys.executable, __file__, "--one", "train", k, *common], env=ENV,
                                  stdout=open(out / f"{args.data}-{k}-train.log", "w"), stderr=subprocess.STDOUT)
                 for k in args.paradigms]
        for k, proc in zip(args.paradigms, procs):
            print(f"train {k}: exit {proc.wait()}", flush=True)
        rows = [json.loads((out / f"{args.data}-{k}" / "train.json").read_text()) for k in args.paradigms
                if (out / f"{args.data}-{k}" / "train.json").is_file()]
        print(_table(rows, [("paradigm", "paradigm"), ("generator params", "generator_params"),
                            ("tokens/image", "tokens_per_image"), ("steps", "steps"), ("train CPU s", "train_cpu_s"),
                            ("encode CPU s", "encode_cpu_s"), ("final loss (nats/token)", "final_loss")]))
    if args.phase in ("eval", "all"):
        rows = []
        for k in args.paradigms:
            run, v = out / f"{args.data}-{k}", _variant(k, args)
            if not (run / f"samples{v}.npz").is_file():
                _child("--one", "sample", k, *common, log=out / f"{args.data}-{k}-eval.log")
            res = run / f"eval{v}-{args.features}-n{args.n}.json"
            subprocess.call(["argen", "eval", "--samples", str(run / f"samples{v}.npz"), "--ref", f"{args.data}:test",
                             "--n", str(args.n), "--features", args.features, "--threads", "1", "--no-progress",
                             "--out", str(res)], env=ENV, stdout=open(out / f"{args.data}-{k}-eval.log", "a"),
                            stderr=subprocess.STDOUT)
            rows.append({"paradigm": k + v, **json.loads(res.read_text()), **json.loads((run / f"sample{v}.json").read_text())})
        floor = out / f"eval-floor-{args.features}-n{args.n}.json"
        if not floor.is_file():
            subprocess.call(["argen", "eval", "--samples", f"{args.data}:train@32", "--ref", f"{args.data}:test@32",
                             "--n", str(args.n), "--features", args.features, "--threads", "1", "--no-progress",
                             "--out", str(floor)], env=ENV, stdout=open(out / "floor.log", "a"), stderr=subprocess.STDOUT)
        rows.append({"paradigm": "real (train vs test)", **json.loads(floor.read_text())})
        (out / f"eval{''.join(_variant(k, args) for k in args.paradigms)}-{args.features}-n{args.n}.json").write_text(json.dumps(rows, indent=2))
        print(json.dumps(rows, indent=2))
    if args.phase in ("speed", "all"):
        (out / "speed.jsonl").unlink(missing_ok=True)
        for g in args.grids:
            for k in args.paradigms:
                _child("--one", "speed", k, "--grid", str(g), *common, log=out / "speed.log")
        rows = [json.loads(line) for line in (out / "speed.jsonl").read_text().splitlines()]
        print(_table(rows, [("paradigm", "paradigm"), ("grid", "grid"), ("px", "resolution"), ("tokens", "tokens"),
                            ("AR steps", "steps"), ("img/CPU-s (total)", "img_per_cpu_s"),
                            ("img/CPU-s (generator)", "img_per_cpu_s_generator_only"), ("img/wall-s", "img_per_wall_s")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
