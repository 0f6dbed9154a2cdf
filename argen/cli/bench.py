"""`argen bench sample`: sampling speed and peak memory of generator presets (random weights are fine).

    argen bench sample --preset llamagen-b --batch 1,4 --threads 2
    argen bench sample --preset fmnist-raster-tiny,llamagen-tiny --batch 1,16 --cfg 2 --top-k 0

A pipeline preset also times the tokenizer's decode. Each (preset, batch) runs `argen.generate` once to warm
up (skipped with --no-warmup) and then `--repeats` times; the best run is reported. Peak memory is the
process's peak RSS on CPU (monotone within one process: run one configuration per process for exact
per-configuration peaks, as benchmarks/sample_speed.py does) or peak allocated memory on CUDA.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

from . import HelpFormatter
from ._common import add_device_argument, add_threads_argument, apply_threads, resolve_device, say

COMMAND = "bench"
HELP = "benchmarks: `bench sample` measures images/s and peak memory of generator/pipeline presets"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("sample", help="images/s and peak memory of sampling", formatter_class=HelpFormatter)
    s.add_argument("--preset", required=True, help="comma-separated generator or pipeline presets, e.g. llamagen-b")
    s.add_argument("--batch", default="1", help="comma-separated batch sizes (images per generate call)")
    s.add_argument("--cfg", type=float, default=4.0, help="guidance scale (LlamaGen demo: 4.0; 1 = off)")
    s.add_argument("--top-k", type=int, default=2000, help="top-k (LlamaGen demo: 2000)")
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--repeats", type=int, default=1, help="timed runs per configuration (best is reported)")
    s.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    s.add_argument("--pack-weights", action="store_true",
                   help="use the prepacked-weight CPU fast path (opt-in; rounds differently from the default path)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the preset (other keys go to the generator), e.g. --set scales=[[8,8]]")
    s.add_argument("--json", default=None, help="also append one JSON line per configuration to this file")
    add_device_argument(s)
    add_threads_argument(s)


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _build(name: str, overrides: list[str], device):
    """(generator, conditioner, tokenizer or None) with random weights; the zero-initialised head gets
    N(0, 0.02) so that logits are not all tied (ties would send top-k down its exact slow path and distort the
    timing). A generator preset gets a 1000-class conditioner."""
    import torch

    from .. import registry
    from ..conditioning.labels import ClassConditionerConfig
    from ..generators.base import GeneratorConfig
    from ..pipeline import PipelineConfig
    from ..presets import get_config
    from ..train.recipes import route_overrides

    cfg = get_config(name)
    if not isinstance(cfg, (GeneratorConfig, PipelineConfig)):
        raise ValueError(f"preset '{name}' is neither a generator nor a pipeline preset")
    groups = route_overrides(overrides, "generator")
    torch.manual_seed(0)
    if isinstance(cfg, PipelineConfig):
        items = groups["tokenizer"] + groups["conditioner"] + groups["generator"] + groups["sampling"]
        model = registry.build(cfg.override(items) if items else cfg).to(device).eval()
        gen, cond, tok = model.generator, model.conditioner, model.tokenizer
    else:
        items = [i[len("generator."):] for i in groups["generator"]]
        gen = registry.build(cfg.override(items) if items else cfg).to(device).eval()
        cond = registry.build(ClassConditionerConfig(dim=gen.cond_dim, num_classes=1000)).to(device).eval()
        tok = None
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.any():
                m.weight.normal_(std=0.02)
    return gen, cond, tok


def bench_sample(name: str, batch: int, *, device, cfg: float, top_k: int, top_p: float, temperature: float,
                 repeats: int = 1, warmup: bool = True, pack: bool = False,
                 overrides: list[str] | None = None) -> dict:
    """Time `argen.generate` (and the tokenizer's decode for pipeline presets) for one configuration."""
    import torch

    from ..sampling import generate

    gen, cond, tok = _build(name, overrides or [], device)
    n = getattr(cond, "num_classes", 0)
    labels = [i % n if n else -1 for i in range(batch)]
    kw = dict(cfg=cfg, top_k=top_k, top_p=top_p, temperature=temperature, pack_weights=pack)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    if warmup:
        generate(gen, cond, labels, seed=0, **kw)
    best_gen, best_dec, tokens = float("inf"), 0.0, None
    for r in range(repeats):
        sync()
        t = time.perf_counter()
        tokens = generate(gen, cond, labels, seed=r, **kw)
        sync()
        best_gen = min(best_gen, time.perf_counter() - t)
    if tok is not None:
        with torch.inference_mode():
            sync()
            t = time.perf_counter()
            tok.decode(tokens)
            sync()
            best_dec = time.perf_counter() - t
    steps = gen.config.num_tokens if hasattr(gen.config, "num_tokens") else None
    h, w = gen.config.grid
    res = tok.downsample * h if tok is not None else None
    return {"preset": name, "batch": batch, "tokens": steps, "grid": f"{h}x{w}", "resolution": res,
            "params_m": round(sum(p.numel() for p in gen.parameters()) / 1e6, 1), "cfg": cfg, "top_k": top_k,
            "threads": torch.get_num_threads(), "device": str(device), "pack": pack,
            "generate_s": round(best_gen, 3), "images_per_s": round(batch / best_gen, 4),
            "ms_per_image": round(1000 * best_gen / batch, 1),
            "decode_s": round(best_dec, 3) if tok is not None else None,
            "images_per_s_with_decode": round(batch / (best_gen + best_dec), 4) if tok is not None else None,
            "peak_mem_mb": round(_peak_mb(device))}


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    batches = [int(b) for b in str(args.batch).split(",") if b.strip()]
    for name in [n.strip() for n in args.preset.split(",") if n.strip()]:
        for b in batches:
            r = bench_sample(name, b, device=device, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p,
                             temperature=args.temperature, repeats=args.repeats, warmup=not args.no_warmup,
                             pack=args.pack_weights, overrides=args.overrides)
            dec = f", with decode {r['images_per_s_with_decode']} img/s" if r["decode_s"] is not None else ""
            say(f"{name} batch {b} ({r['grid']} tokens, {r['params_m']}M params, {r['threads']} threads): "
                f"{r['images_per_s']} img/s ({r['ms_per_image']} ms/img){dec}, peak mem {r['peak_mem_mb']} MB")
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    return 0
