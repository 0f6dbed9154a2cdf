"""Reconstruction table: every tokenizer family's `-tiny` preset, trained with the same recipe for the
same CPU time, on Fashion-MNIST and emoji at 32 px (8x8 token grid, 8 bits per token position).

    python benchmarks/reconstruction.py --cpu-seconds 150 --jobs 2 --out runs/bench-recon

Each (dataset, family) trains in its own single-threaded subprocess through `argen.train.Trainer` and
`argen.tokenizers.task.TokenizerTask` (L1 reconstruction + quantizer/KL loss, Adam lr 2e-4, batch 32,
no GAN: short CPU runs measure the bottleneck, not the discriminator), stopping at the first multiple of
`--chunk` steps after `--cpu-seconds` of process CPU time. Then PSNR / SSIM (8-bit reconstructions),
the Frechet distance on `--features` (default: argen's LeNet trained on Fashion-MNIST, labelled FD_lenet;
pass `inception` for rFID, ~1 s/image here) and codebook usage / perplexity over the first `--n` test
images. Prints a markdown table and writes results.json in `--out`.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FAMILIES = ("vq", "rvq", "fsq", "lfq", "bsq", "msvq", "vae", "pixel")
DATASETS = ("fashion-mnist", "emoji")
RESOLUTION = 32


def train_and_eval(family: str, data: str, args: argparse.Namespace) -> dict:
    """One run, in this process (called in the subprocess)."""
    import torch

    torch.set_num_threads(1)
    from argen import registry
    from argen.data import load_dataset
    from argen.presets import get_config
    from argen.tokenizers.task import TokenizerTask, TokenizerTaskConfig
    from argen.saving import load, save
    from argen.train import TrainConfig, Trainer

    out = Path(args.out) / f"{data}-{family}"
    info_path = out / "train_info.json"
    if args.eval_only and info_path.is_file():  # reuse the trained tokenizer
        tokenizer = load(out / "tokenizer")
        steps, cpu = json.loads(info_path.read_text())["steps"], json.loads(info_path.read_text())["cpu_seconds"]
        return _evaluate(tokenizer, family, data, steps, cpu, args)
    cfg = get_config(f"{family}-tiny")
    torch.manual_seed(0)
    tokenizer = registry.build(cfg)
    steps, cpu = 0, 0.0
    if any(p.requires_grad for p in tokenizer.parameters()):
        train_cfg = TrainConfig(steps=1_000_000, batch_size=args.batch_size, lr=2e-4, betas=(0.5, 0.9),
                                weight_decay=0.0, grad_clip=1.0, log_every=args.chunk, ckpt_every=0, keep_checkpoints=1)
        task = TokenizerTask(tokenizer, TokenizerTaskConfig().override(["loss.disc_weight=0"]))
        dataset = load_dataset(data, split="train", resolution=RESOLUTION)
        trainer = Trainer(train_cfg, task, dataset, out, resume=False)
        start = time.process_time()
        while time.process_time() - start < args.cpu_seconds:
            trainer.fit(stop_at=trainer.step + args.chunk)
        cpu, steps = time.process_time() - start, trainer.step
    tokenizer.eval()
    save(tokenizer, out / "tokenizer")
    info_path.write_text(json.dumps({"steps": steps, "cpu_seconds": cpu}))
    return _evaluate(tokenizer, family, data, steps, cpu, args)


def _evaluate(tokenizer, family: str, data: str, steps: int, cpu: float, args: argparse.Namespace) -> dict:
    from argen.data import load_dataset
    from argen.tokenizers.evaluation import evaluate_tokenizer

    n = min(args.n, len(load_dataset(data, split="test")))  # emoji's test split holds 386 images
    result = evaluate_tokenizer(tokenizer, data, split="test", resolution=RESOLUTION, n=n,
                                features=args.features, batch_size=128)
    layout = tokenizer.layout_for(RESOLUTION, RESOLUTION)
    bits = round(math.log2(layout.vocab_size) * layout.tokens_per_position, 2) if layout.discrete else None
    return {"family": family, "data": data, "steps": steps, "cpu_seconds": round(cpu, 1),
            "params_M": round(sum(p.numel() for p in tokenizer.parameters()) / 1e6, 3),
            "tokens": layout.num_tokens, "grid": list(layout.grid), "bits_per_position": bits,
            "metrics": result["metrics"], "fd_label": result["protocol"]["metric_label"], "n": result["protocol"]["n_gen"]}


def table(rows: list[dict]) -> str:
    label = rows[0]["fd_label"] if rows else "FD"
    head = (f"| data | family | tokens | bits/pos | steps | CPU s | PSNR | SSIM | r{label} | usage % | perplexity |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    fd_key = "fid" if label == "FID" else next((k for k in (rows[0]["metrics"] if rows else {}) if k.startswith("fd_")), "fd")
    for r in rows:
        m = r["metrics"]
        usage = f"{m['codebook_usage_pct']:.1f}" if "codebook_usage_pct" in m else "-"
        ppl = f"{m['codebook_perplexity']:.1f}" if "codebook_perplexity" in m else "-"
        lines.append(f"| {r['data']} | {r['family']} | {r['tokens']} | {r['bits_per_position'] or 'cont.'} | {r['steps']} | "
                     f"{r['cpu_seconds']:.0f} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m.get(fd_key, float('nan')):.2f} | "
                     f"{usage} | {ppl} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--cpu-seconds", type=float, default=150.0, help="training budget per run (process CPU time)")
    p.add_argument("--chunk", type=int, default=20, help="steps between budget checks")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n", type=int, default=1000, help="test images for the metrics")
    p.add_argument("--features", default="lenet-fmnist", help="lenet-fmnist (fast, FD) or inception (rFID)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    p.add_argument("--out", default="runs/bench-recon")
    p.add_argument("--eval-only", action="store_true", help="re-evaluate tokenizers already trained in --out")
    p.add_argument("--one", nargs=2, metavar=("FAMILY", "DATA"), help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    if args.one:
        res = train_and_eval(args.one[0], args.one[1], args)
        (out / f"{args.one[1]}-{args.one[0]}.json").write_text(json.dumps(res, indent=2))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    common = ["--cpu-seconds", str(args.cpu_seconds), "--chunk", str(args.chunk), "--batch-size", str(args.batch_size),
              "--n", str(args.n), "--features", args.features, "--out", str(out)] + (["--eval-only"] if args.eval_only else [])
    runs = [(f, d) for d in args.datasets for f in args.families]

    def launch(run: tuple[str, str]) -> dict | None:
        family, data = run
        log = out / f"{data}-{family}.log"
        with open(log, "w") as fh:
            code = subprocess.call([sys.executable, __file__, "--one", family, data, *common], stdout=fh, stderr=fh,
                                   env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
        path = out / f"{data}-{family}.json"
        if code != 0 or not path.is_file():
            print(f"{data} {family}: failed (see {log})", flush=True)
            return None
        res = json.loads(path.read_text())
        print(f"{data} {family}: done ({res['steps']} steps)", flush=True)
        return res

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = [r for r in pool.map(launch, runs) if r is not None]
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
