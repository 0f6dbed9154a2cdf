"""Sampling speed of argen generators (images/s, peak memory), optionally side by side with the official
LlamaGen `generate()` on the *same* random weights, and a markdown section for benchmarks/RESULTS.md.

    # argen presets; one subprocess per configuration so that peak RSS is per configuration
    python benchmarks/sample_speed.py --preset llamagen-b,fmnist-raster-tiny --batch 1,4 --threads 2
    # + official LlamaGen generate() on identical GPT weights (needs a local FoundationVision/LlamaGen checkout)
    python benchmarks/sample_speed.py --preset llamagen-b --batch 1,4 --threads 2 --official ~/LlamaGen
    # write the section into RESULTS.md
    python benchmarks/sample_speed.py ... --append benchmarks/RESULTS.md

Settings default to LlamaGen's demo (cfg 4.0, top-k 2000, top-p 1, temperature 1, fp32). For the official
comparison both implementations load one state dict of N(0, 0.02) weights (argen and LlamaGen share
parameter names) and run in alternating subprocesses. Set OMP_WAIT_POLICY=PASSIVE on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child_argen(a) -> dict:
    import torch

    import argen
    from argen.cli.bench import bench_sample

    torch.set_num_threads(a.threads)
    if a.weights is None:
        return bench_sample(a.preset, a.batch, device=torch.device("cpu"), cfg=a.cfg, top_k=a.top_k, top_p=1.0,
                            temperature=1.0, repeats=a.repeats, warmup=True, pack=a.pack_weights, overrides=a.set)
    from argen.interop.llamagen import convert_gpt
    from argen.presets import get_config

    # the official-layout state dict (class table included), converted as `argen convert llamagen` does
    gen, cond, _ = convert_gpt({"model": torch.load(a.weights, weights_only=True)},
                               get_config(a.preset, [f"scales=[[{a.grid},{a.grid}]]"]))
    labels = list(range(a.batch))
    argen.generate(gen, cond, labels[:1], cfg=a.cfg, top_k=a.top_k, seed=0)  # warm-up (small)
    t = time.perf_counter()
    argen.generate(gen, cond, labels, cfg=a.cfg, top_k=a.top_k, seed=0, pack_weights=a.pack_weights)
    return {"impl": "argen" + (" (packed)" if a.pack_weights else ""), "seconds": time.perf_counter() - t}


def child_official(a) -> dict:
    import torch

    sys.path.insert(0, str(Path(a.official).expanduser()))
    from autoregressive.models.generate import generate
    from autoregressive.models.gpt import GPT_models

    torch.set_num_threads(a.threads)
    names = {"llamagen-b": "GPT-B", "llamagen-l": "GPT-L", "llamagen-xl": "GPT-XL", "llamagen-xxl": "GPT-XXL",
             "llamagen-3b": "GPT-3B"}
    gpt = GPT_models[names[a.preset]](vocab_size=16384, block_size=a.grid ** 2, num_classes=1000, cls_token_num=1,
                                      model_type="c2i").eval()
    missing, unexpected = gpt.load_state_dict(torch.load(a.weights, weights_only=True), strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not match the official model: {missing[:3]} {unexpected[:3]}")
    labels = torch.arange(a.batch)
    kw = dict(cfg_scale=a.cfg, temperature=1.0, top_k=a.top_k, top_p=1.0, sample_logits=True)
    generate(gpt, labels[:1], 8, **kw)  # warm-up (small)
    t = time.perf_counter()
    generate(gpt, labels, a.grid ** 2, **kw)
    return {"impl": "official", "seconds": time.perf_counter() - t}


def run_child(args, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--cfg", str(args.cfg), "--top-k", str(args.top_k),
           *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY":
                                                                  os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
    if out.returncode:
        raise SystemExit(f"child failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llamagen-b")
    p.add_argument("--batch", default="1,4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--top-k", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="preset override (argen runs only)")
    p.add_argument("--official", default=None, help="local FoundationVision/LlamaGen checkout: add the side-by-side")
    p.add_argument("--grid", type=int, default=16, help="token grid for the side-by-side (16 = 256 px)")
    p.add_argument("--pack-weights", action="store_true", help="argen with the opt-in prepacked-weight CPU path")
    p.add_argument("--append", default=None, help="append a markdown section to this RESULTS.md")
    # internal: child processes
    p.add_argument("--child", choices=["argen", "official"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        args.batch = int(args.batch)
        res = child_argen(args) if args.child == "argen" else child_official(args)
        res["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(res), flush=True)
        return

    import torch

    command = "python benchmarks/sample_speed.py " + " ".join(sys.argv[1:])
    rows, sbs = [], []
    for preset in args.preset.split(","):
        for b in args.batch.split(","):
            extra = ["--child", "argen", "--preset", preset, "--batch", b, "--repeats", str(args.repeats)]
            extra += [x for s in args.set for x in ("--set", s)] + (["--pack-weights"] if args.pack_weights else [])
            rows.append(run_child(args, extra))
            print(json.dumps(rows[-1]), flush=True)
    if args.official:
        from argen import registry
        from argen.presets import get_config

        for preset in args.preset.split(","):
            if not preset.startswith("llamagen-") or preset == "llamagen-tiny":
                continue
            torch.manual_seed(0)
            gen = registry.build(get_config(preset, [f"scales=[[{args.grid},{args.grid}]]"]))
            with torch.no_grad():
                for prm in gen.parameters():
                    if prm.dim() == 2:
                        prm.normal_(std=0.02)
            weights = Path(tempfile.mkdtemp()) / "gpt.pt"
            state = dict(gen.state_dict())  # the official layout: the class table sits in the GPT
            state["cls_embedding.embedding_table.weight"] = torch.randn(1001, gen.config.dim) * 0.02
            torch.save(state, weights)
            del gen
            for b in args.batch.split(","):
                common = ["--preset", preset, "--batch", b, "--weights", str(weights), "--grid", str(args.grid),
                          "--official", args.official]
                off = run_child(args, ["--child", "official", *common])
                ours = run_child(args, ["--child", "argen", *common])
                entry = {"preset": preset, "batch": int(b), "official_s": off["seconds"], "argen_s": ours["seconds"],
                         "official_mem": off["peak_mem_mb"], "argen_mem": ours["peak_mem_mb"]}
                sbs.append(entry)
                print(json.dumps(entry), flush=True)
            weights.unlink()
    if args.append:
        lines = [f"\n## Sampling speed (argen.generate) — {time.strftime('%Y-%m-%d', time.gmtime())}\n",
                 f"Command: `{'OMP_WAIT_POLICY=PASSIVE ' if os.environ.get('OMP_WAIT_POLICY') else ''}{command}`",
                 f"Machine: 2-core {platform.machine()} CPU, shared/contended (load average "
                 f"{os.getloadavg()[0]:.1f} at the end); torch {torch.__version__}, {args.threads} threads, fp32. "
                 f"Date: {time.strftime('%a %b %d %H:%M UTC %Y', time.gmtime())}.",
                 f"Settings: cfg {args.cfg} (batch doubled), top-k {args.top_k}, top-p 1, temperature 1, random weights; "
                 "one subprocess per row; peak memory = process peak RSS.\n",
                 "| preset | tokens | params | batch | generate s | images/s | ms/image | + decode images/s | peak MB |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['preset']} | {r['grid']} | {r['params_m']}M | {r['batch']} | {r['generate_s']:.2f} | "
                         f"{r['images_per_s']:.4g} | {r['ms_per_image']:.0f} | {r['images_per_s_with_decode'] or '—'} | "
                         f"{r['peak_mem_mb']} |")
        if sbs:
            lines += ["", f"Side by side with the official LlamaGen `generate()` (same N(0, 0.02) GPT weights, "
                      f"{args.grid}x{args.grid} tokens, token generation only, alternating subprocesses):\n",
                      "| preset | batch | official s | argen s | official images/s | argen images/s | speed-up | peak MB official / argen |",
                      "|---|---|---|---|---|---|---|---|"]
            for e in sbs:
                lines.append(f"| {e['preset']} | {e['batch']} | {e['official_s']:.1f} | {e['argen_s']:.1f} | "
                             f"{e['batch'] / e['official_s']:.4f} | {e['batch'] / e['argen_s']:.4f} | "
                             f"{e['official_s'] / e['argen_s']:.2f}x | {e['official_mem']} / {e['argen_mem']} |")
        with open(args.append, "a") as f:
            f.write("\n".join(lines) + "\n")
        print(f"appended to {args.append}")


if __name__ == "__main__":
    main()
