"""Text-to-image conditioning modes of the raster generator on emoji captions: prefix tokens (LlamaGen-T2I),
cross-attention, and pooled AdaLN, at equal generator parameters and equal training CPU time.

    python benchmarks/reconstruction.py --families vq --datasets emoji --jobs 1     # the shared tokenizer, once
    python benchmarks/t2i_cond_modes.py --cpu-seconds 240 --out runs/bench-t2i      # train + eval every mode
    python benchmarks/t2i_cond_modes.py eval --out runs/bench-t2i                   # re-evaluate trained modes

Every mode starts from `emoji-raster-t2i-tiny` widened to 128 x 3 layers; the SwiGLU hidden width of the
cross-attention and AdaLN variants is reduced so that the generator's parameter count matches the prefix
model's within 1% (MODES). The text conditioner (frozen MiniLM + the learned adapter and null caption) is
the same in all three. The vq-tiny emoji tokenizer of benchmarks/reconstruction.py is shared (--tokenizer),
and so is the token cache with the MiniLM caption features (encoded once, not counted in the budget).
Each mode trains in its own single-threaded subprocess (AdamW, constant lr after warm-up, caption dropout
0.1) until the first multiple of --chunk steps after --cpu-seconds of process CPU time.

Evaluated on emoji:test (386 held-out images with their captions):
  * bits/token with the image's own caption and with the null caption: their difference is how much the
    model reads from the text (teacher-forced, exact);
  * one sample per test caption (seed 0, cfg 3, top-k off): FID (Inception) against the test images, and
    TIS_align-minilm-emoji with retrieval top-1 (argen's contrastive model, `argen eval --train-alignment
    emoji`; not CLIPScore), next to the real images' own-caption score;
  * sampling speed: images per CPU-second, batch 32, one thread.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

BASE = ["generator.dim=128", "generator.depth=3", "generator.num_heads=4"]
MODES = {  # equal generator parameters (see the module docstring); llama's default hidden at 128 is 512
    "prefix": BASE + ["generator.cond_mode=prefix"],
    "cross": BASE + ["generator.cond_mode=cross", "generator.ffn_hidden=341"],
    "adaln": BASE + ["generator.cond_mode=adaln", "generator.ffn_hidden=254"],
}
PRESET = "emoji-raster-t2i-tiny"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _setup(args):
    import torch

    torch.set_num_threads(1)
    from argen.data import load_dataset
    from argen.saving import load

    tok_dir = Path(args.tokenizer)
    if not tok_dir.is_dir():
        raise SystemExit(f"{tok_dir} missing: run `python benchmarks/reconstruction.py --families vq --datasets emoji"
                         " --jobs 1` first (or pass --tokenizer)")
    tokenizer = load(tok_dir).eval().requires_grad_(False)
    res = tokenizer.config.resolution
    return tokenizer, load_dataset("emoji", split="train", resolution=res), load_dataset("emoji", split="test",
                                                                                        resolution=res)


def _cache(tokenizer, dataset, path: Path, text_encoder):
    from argen.data import TokenCacheDataset, build_token_cache, fingerprint

    build_token_cache(tokenizer.encode, dataset, path, batch_size=128, tokenizer_hash=fingerprint(tokenizer),
                      text_encoder=text_encoder)
    return TokenCacheDataset(path, tokenizer_hash=fingerprint(tokenizer), text_encoder=text_encoder)


def train_one(mode: str, args) -> dict:
    import torch

    from argen import registry
    from argen.generators import GeneratorTask
    from argen.pipeline import Pipeline
    from argen.train import Trainer
    from argen.train.recipes import _text_encoder, generator_configs

    tokenizer, train, _ = _setup(args)
    cfg, train_cfg, _ = generator_configs(PRESET, tokenizer, train, MODES[mode], steps=1_000_000,
                                          batch_size=args.batch_size, lr=args.lr, seed=0)
    train_cfg = train_cfg.replace(schedule="constant", warmup_steps=args.warmup, log_every=args.chunk, ckpt_every=0,
                                  keep_checkpoints=1)
    encoder = _text_encoder(cfg.conditioner, "cpu")
    t0 = time.process_time()
    tokens = _cache(tokenizer, train, Path(args.out) / "tokens-train", encoder)
    encode_cpu = time.process_time() - t0
    torch.manual_seed(0)
    generator, conditioner = registry.build(cfg.generator), registry.build(cfg.conditioner)
    generator.bind_tokenizer(tokenizer)
    out = Path(args.out) / mode
    trainer = Trainer(train_cfg, GeneratorTask(generator, conditioner), tokens, out, resume=False)
    start, records = time.process_time(), []
    while time.process_time() - start < args.cpu_seconds:
        records += trainer.fit(stop_at=trainer.step + args.chunk) or []
    cpu = time.process_time() - start
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.ema_module)
    Pipeline.from_parts(tokenizer, conditioner, generator, sampling=cfg.sampling).eval().save(out / "pipeline")
    res = {"mode": mode, "set": MODES[mode], "generator_params": _params(generator),
           "conditioner_params": _params(conditioner), "steps": trainer.step, "batch_size": train_cfg.batch_size,
           "train_cpu_s": round(cpu, 1), "encode_cpu_s": round(encode_cpu, 1), "train_images": len(train),
           "final_loss": (records[-1] if records else {}).get("loss")}
    (out / "train.json").write_text(json.dumps(res, indent=2))
    return res


def eval_one(mode: str, args) -> dict:
    import numpy as np
    import torch

    from argen.metrics.alignment import alignment_score
    from argen.metrics.evaluator import evaluate
    from argen.pipeline import Pipeline
    from argen.train.recipes import _text_encoder
    from argen.types import Cond

    tokenizer, _, test = _setup(args)
    out = Path(args.out) / mode
    pipe = Pipeline.load(out / "pipeline").eval()
    encoder = _text_encoder(pipe.config.conditioner, "cpu")
    cache = _cache(tokenizer, test, Path(args.out) / "tokens-test", encoder)
    tokens = torch.from_numpy(np.asarray(cache.tokens)).long()
    text = torch.from_numpy(np.asarray(cache.text, dtype=np.float32))
    mask = torch.from_numpy(np.asarray(cache.text_mask))
    bits = {}
    with torch.inference_mode():
        for name, cond in (("caption", Cond(text=text, text_mask=mask)), ("null", pipe.conditioner.null(len(tokens)))):
            total = 0.0
            for i in range(0, len(tokens), 64):
                c = pipe.conditioner(Cond(text=cond.text[i:i + 64], text_mask=cond.text_mask[i:i + 64]))
                total += float(pipe.generator.loss(tokens[i:i + 64], c).loss) * len(tokens[i:i + 64])
            bits[name] = total / len(tokens) / math.log(2)
        captions = list(test.captions)
        c0, chunks = time.process_time(), []
        for i in range(0, len(captions), args.batch):
            chunks.append(pipe(captions[i:i + args.batch], seed=args.seed + i))
        sample_cpu = time.process_time() - c0
    images = torch.cat(chunks)
    arr = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    np.savez(out / "samples.npz", arr_0=arr.permute(0, 2, 3, 1).numpy())
    torch.set_num_threads(args.eval_threads)
    fid = evaluate(out / "samples.npz", f"emoji:test@{tokenizer.config.resolution}", features="inception",
                   out=out / "fid.json")["metrics"]
    align = alignment_score(arr, captions, reference="auto", out=out / "alignment.json")
    am = align["metrics"]
    ref = align.get("reference") or {}
    res = {"mode": mode, "bits_caption": round(bits["caption"], 4), "bits_null": round(bits["null"], 4),
           "bits_from_text": round(bits["null"] - bits["caption"], 4),
           "fid": round(fid.get("fid_inception", fid.get("fid", float("nan"))), 2),
           "tis": round(am["tis_align-minilm-emoji"], 2), "top1": round(am["retrieval_top1_align-minilm-emoji"], 3),
           "ref": {k: v for k, v in ref.items()}, "n": len(captions),
           "img_per_cpu_s": round(len(captions) / sample_cpu, 2)}
    (out / "eval.json").write_text(json.dumps(res, indent=2))
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", nargs="?", default="all", choices=["train", "eval", "all"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--tokenizer", default="runs/bench-recon/emoji-vq/tokenizer")
    p.add_argument("--cpu-seconds", type=float, default=240.0, help="training budget per mode (process CPU time)")
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=32, help="images per sampling call")
    p.add_argument("--eval-threads", type=int, default=2, help="threads for the Inception / alignment features")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-t2i")
    p.add_argument("--one", nargs=2, metavar=("PHASE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        phase, mode = args.one
        print(json.dumps((train_one if phase == "train" else eval_one)(mode, args)))
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    passthrough = [a for a in sys.argv[1:] if a not in ("train", "eval", "all")]
    for phase in (["train", "eval"] if args.phase == "all" else [args.phase]):
        for mode in args.modes:
            rc = subprocess.call([sys.executable, __file__, *passthrough, "--one", phase, mode], env=ENV)
            if rc:
                return rc
    rows = []
    for mode in args.modes:
        d = Path(args.out) / mode
        rows.append({**json.loads((d / "train.json").read_text()), **json.loads((d / "eval.json").read_text())})
    print("| mode | generator params | steps | train CPU s | bits/token (caption) | bits/token (null) | bits from text "
          "| FID | TIS | top-1 | img / CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['generator_params']:,} | {r['steps']} | {r['train_cpu_s']} | {r['bits_caption']} | "
              f"{r['bits_null']} | {r['bits_from_text']} | {r['fid']} | {r['tis']} | {r['top1']} | {r['img_per_cpu_s']} |")
    if rows and rows[0].get("ref"):
        print("real images reference:", json.dumps(rows[0]["ref"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
