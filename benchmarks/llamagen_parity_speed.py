"""LlamaGen sampling speed: the official `generate()` + `decode_code` vs `argen.generate` + `tokenizer.decode`
on the same official checkpoints (e.g. GPT-B c2i + VQ-16), plus a greedy parity check.

The official code is not part of argen: pass a local checkout of FoundationVision/LlamaGen with
`--official DIR` (only needed for `--impl official` and `--check`). argen reads the same files through
`argen.interop.llamagen` (or a directory written by `argen convert llamagen`, `--pipeline DIR`).

    # one implementation per process (whole-process timing with /usr/bin/time -v also works)
    python benchmarks/llamagen_parity_speed.py --impl argen    --tokenizer vq.pt --generator gpt.pt --batch 1
    python benchmarks/llamagen_parity_speed.py --impl official --official ~/LlamaGen --tokenizer vq.pt --generator gpt.pt --batch 1
    # greedy (top_k=1) token parity between the two, then exit
    python benchmarks/llamagen_parity_speed.py --check --official ~/LlamaGen --tokenizer vq.pt --generator gpt.pt

Prints one JSON line per run: seconds for token generation and for decoding, images/s with and without
decode. Settings default to the official demo: cfg 4.0, top_k 2000, top_p 1, temperature 1, fp32.
Set OMP_WAIT_POLICY=PASSIVE on a shared machine: spinning OpenMP threads otherwise dominate.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def load_official(args):
    sys.path.insert(0, str(Path(args.official).expanduser()))
    from autoregressive.models.gpt import GPT_models
    from tokenizer.tokenizer_image.vq_model import VQ_models

    from argen.interop.common import read_checkpoint, unwrap

    vq = VQ_models[args.vq_model]()
    missing, _ = vq.load_state_dict(unwrap(read_checkpoint(args.tokenizer))[0], strict=False)
    gpt = GPT_models[args.gpt_model](vocab_size=16384, block_size=args.grid ** 2, num_classes=1000, cls_token_num=1,
                                     model_type="c2i")
    gpt_state = unwrap(read_checkpoint(args.generator), ("model", "module", "state_dict"))[0]
    missing_g, _ = gpt.load_state_dict(gpt_state, strict=False)  # files may carry KV-cache buffers
    if missing or missing_g:
        raise SystemExit(f"official models lack weights: {missing[:3]} {missing_g[:3]}")
    return vq.eval(), gpt.eval()


def load_argen(args):
    import argen
    from argen.interop.llamagen import convert_pipeline

    if args.pipeline:
        return argen.load(args.pipeline)
    return convert_pipeline(args.tokenizer, args.generator, preset=args.preset)[0]


def run_official(models, labels, args, seed):
    from autoregressive.models.generate import generate

    vq, gpt = models
    torch.manual_seed(seed)  # the official sampler draws from the global RNG
    t0 = time.perf_counter()
    ids = generate(gpt, labels, args.grid ** 2, cfg_scale=args.cfg, cfg_interval=-1, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, sample_logits=True)
    t1 = time.perf_counter()
    images = None
    if args.decode:
        with torch.no_grad():
            images = vq.decode_code(ids, [labels.shape[0], 8, args.grid, args.grid]).clamp(-1, 1)
    return ids.long(), images, t1 - t0, time.perf_counter() - t1


def run_argen(pipe, labels, args, seed):
    import argen

    t0 = time.perf_counter()
    ids = argen.generate(pipe.generator, pipe.conditioner, labels, cfg=args.cfg, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, seed=seed, pack_weights=args.pack_weights)
    t1 = time.perf_counter()
    images = pipe.decode(ids) if args.decode else None
    return ids, images, t1 - t0, time.perf_counter() - t1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", choices=["argen", "official"], default="argen")
    p.add_argument("--official", help="local checkout of FoundationVision/LlamaGen (for --impl official / --check)")
    p.add_argument("--tokenizer", help="official VQ checkpoint (vq_ds16_c2i.pt)")
    p.add_argument("--generator", help="official c2i GPT checkpoint (c2i_B_256.pt)")
    p.add_argument("--pipeline", help="argen pipeline dir from `argen convert llamagen` (instead of converting)")
    p.add_argument("--preset", default="llamagen-b")
    p.add_argument("--gpt-model", default="GPT-B")
    p.add_argument("--vq-model", default="VQ-16")
    p.add_argument("--grid", type=int, default=16, help="token grid side (16 -> 256 tokens)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--top-k", type=int, default=2000)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--no-decode", dest="decode", action="store_false")
    p.add_argument("--pack-weights", action="store_true", help="argen's opt-in prepacked-weight CPU path")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="greedy (top_k=1) token parity official vs argen, then exit")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    labels = torch.randint(0, 1000, (args.batch,), generator=torch.Generator().manual_seed(args.seed))

    if args.check:
        args.top_k, args.decode = 1, True
        off = run_official(load_official(args), labels, args, args.seed)
        arg = run_argen(load_argen(args), labels, args, args.seed)
        same = torch.equal(off[0], arg[0])
        diff = (off[1] - arg[1]).abs().max().item()
        print(json.dumps({"check": "greedy", "labels": labels.tolist(), "cfg": args.cfg, "ids_equal": same,
                          "mismatched_tokens": int((off[0] != arg[0]).sum()), "image_max_abs_diff": diff}))
        return 0 if same else 1

    t = time.perf_counter()
    models = load_official(args) if args.impl == "official" else load_argen(args)
    load_s = time.perf_counter() - t
    run = run_official if args.impl == "official" else run_argen
    for r in range(args.repeats):
        _, _, gen_s, dec_s = run(models, labels, args, args.seed + r)
        B = args.batch
        print(json.dumps({"impl": args.impl, "batch": B, "tokens": args.grid ** 2, "cfg": args.cfg, "top_k": args.top_k,
                          "threads": args.threads, "load_s": round(load_s, 2), "generate_s": round(gen_s, 2),
                          "ms_per_step": round(1000 * gen_s / args.grid ** 2, 1), "decode_s": round(dec_s, 2),
                          "images_per_s_tokens": round(B / gen_s, 4),
                          "images_per_s_with_decode": round(B / (gen_s + dec_s), 4) if args.decode else None}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
