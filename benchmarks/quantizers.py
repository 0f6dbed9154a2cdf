"""Quantizer throughput and peak memory: argen vs vector-quantize-pytorch (vqp) on identical inputs.

    python benchmarks/quantizers.py                      # all cases, 1 and 2 threads, markdown table
    python benchmarks/quantizers.py --cases vq,lfq --threads 1 --impls argen

Cases (batch 64 x 256 vectors): VQ 16384 x 8 cosine (EMA 0.8, STE), FSQ (8,8,8,5,5,5), LFQ 2^14 (entropy weight
0.1, commitment 0.25), residual VQ depth 4 x 16384 x 8 (EMA 0.8). Both libraries get the same configuration
and the same numbers, each in its native layout (argen channel-first (B, C, 16, 16), vqp channel-last
(B, 256, C)), converted once outside the timed calls.

Modes: `eval` = eval-mode forward under no_grad; `train` = training-mode forward under no_grad (EMA / entropy /
usage statistics updated); `train+bwd` = training forward + backward of (z_q^2).mean() + aux loss.

Method. Every (impl, case, mode, threads) runs in its own fresh subprocess. Timing: one call; if it took 5 s
or more it is the measurement, otherwise it is a warm-up and we take the median of 5 samples, each averaging
enough calls to last >= 0.3 s. Each case runs `--rounds` times (default 3) alternating argen and vqp, and
the median over rounds is reported (cases where either side takes >= 5 s per call run one round). Throughput is reported both per
wall-clock second and per process CPU-second (the machine is shared, so wall time is inflated by other
jobs; CPU time is the fairer figure at 1 thread). Peak memory: tracemalloc cannot see torch's allocator,
so we run one call on a 1-image batch (this pages in the library code of every op, which would otherwise
count as RSS growth), take the resident set size then (/proc/self/statm) as the baseline, and report
ru_maxrss after the full-size calls minus that baseline: the extra peak RSS of a 64 x 256-vector call,
including autograd buffers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    "vq": "VQ 16384 x 8, cosine, EMA",
    "fsq": "FSQ (8,8,8,5,5,5)",
    "lfq": "LFQ 2^14, entropy penalty",
    "rvq": "RVQ depth 4, 16384 x 8, EMA",
}
MODES = ("eval", "train", "train+bwd")
BATCH, GRID = 64, 16  # 64 x 256 vectors


def _dim(case: str) -> int:
    return {"vq": 8, "fsq": 6, "lfq": 14, "rvq": 8}[case]


def build_argen(case: str):
    from argen import registry
    from argen.tokenizers.quantizers.fsq import FSQConfig
    from argen.tokenizers.quantizers.lfq import LFQConfig
    from argen.tokenizers.quantizers.rvq import RVQConfig
    from argen.tokenizers.quantizers.vq import VQConfig

    cfg = {
        "vq": VQConfig(dim=8, codebook_size=16384, metric="cosine", ema_decay=0.8, beta=0.25),
        "fsq": FSQConfig(dim=6, levels=(8, 8, 8, 5, 5, 5)),
        "lfq": LFQConfig(dim=14, bits=14, entropy_weight=0.1, commitment_weight=0.25, inv_temperature=100.0),
        "rvq": RVQConfig(dim=8, codebook_size=16384, depth=4, ema_decay=0.8, beta=0.25),
    }[case]
    q = registry.build(cfg)

    def call(z):  # z (B, C, H, W)
        out = q(z)
        return out.z_q, out.loss

    def layout(z):  # (B, L, C) -> argen's native (B, C, H, W), once, outside the timed calls
        return z.transpose(1, 2).reshape(z.shape[0], -1, GRID, GRID).contiguous()

    return q, call, layout


def build_vqp(case: str):
    import vector_quantize_pytorch as vqp

    if case == "vq":
        q = vqp.VectorQuantize(dim=8, codebook_size=16384, use_cosine_sim=True, decay=0.8, commitment_weight=0.25,
                               rotation_trick=False)
    elif case == "fsq":
        q = vqp.FSQ(levels=[8, 8, 8, 5, 5, 5])
    elif case == "lfq":
        q = vqp.LFQ(dim=14, codebook_size=2**14, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                    diversity_gamma=1.0)
    else:
        q = vqp.ResidualVQ(dim=8, codebook_size=16384, num_quantizers=4, decay=0.8, commitment_weight=0.25,
                           rotation_trick=False)

    def call(z):
        out = q(z)
        if case == "fsq":
            return out[0], out[0].new_zeros(())
        if case == "lfq":
            return out.quantized, out.entropy_aux_loss
        return out[0], out[2].sum()

    return q, call, lambda z: z  # vqp's native layout is channel-last (B, L, C)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(impl: str, case: str, mode: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    q, call, layout = (build_argen if impl == "argen" else build_vqp)(case)
    q.train(mode != "eval")
    # Same numbers for both libraries, each in its native layout.
    z = layout(torch.randn(BATCH, GRID * GRID, _dim(case), generator=torch.Generator().manual_seed(0)))

    def once(inp=z):
        if mode == "train+bwd":
            x = inp.clone().requires_grad_()
            z_q, loss = call(x)
            (z_q.square().mean() + loss).backward()
        else:
            with torch.no_grad():
                call(inp)

    once(z[:1])  # page in the code of every op used (it counts in RSS) with a 1-image batch
    base = _rss_bytes()
    w0, c0 = time.perf_counter(), time.process_time()
    once()
    first = (time.perf_counter() - w0, time.process_time() - c0)
    if first[0] >= 5.0:  # slow case: the first call is the measurement
        samples = [first]
    else:  # treat it as warm-up; 5 samples of enough calls to last >= 0.3 s each
        reps = max(1, math.ceil(0.3 / max(first[0], 1e-4)))
        samples = []
        for _ in range(5):
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                once()
            samples.append(((time.perf_counter() - w0) / reps, (time.process_time() - c0) / reps))
    times = samples
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall = statistics.median(t[0] for t in times)
    cpu = statistics.median(t[1] for t in times)
    n = BATCH * GRID * GRID
    return {"impl": impl, "case": case, "mode": mode, "threads": threads, "vec_per_s": n / wall,
            "vec_per_cpu_s": n / cpu, "peak_mib": max(0, peak - base) / 2**20, "calls": len(times)}


def _run_case(impl: str, case: str, mode: str, threads: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", impl, case, mode, str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"# {impl} {case} {mode} t={threads} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"# {impl:5s} {case:3s} {mode:9s} t={threads}: {_fmt_rate(r['vec_per_cpu_s'])} vec/CPU-s, "
          f"{_fmt_rate(r['vec_per_s'])} vec/s, +{r['peak_mib']:.1f} MiB", flush=True)
    return r


def _fmt_rate(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--impls", default="argen,vqp")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per case; the median is reported")
    p.add_argument("--json", default=None, help="also write raw results to this file")
    p.add_argument("--child", nargs=4, metavar=("IMPL", "CASE", "MODE", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        impl, case, mode, threads = args.child
        print(json.dumps(run_child(impl, case, mode, int(threads))))
        return 0

    results = []
    for threads in map(int, args.threads.split(",")):
        for case in args.cases.split(","):
            for mode in args.modes.split(","):
                runs: dict[str, list[dict]] = {}
                for rnd in range(args.rounds):  # impls alternate, so load spikes hit both alike
                    for impl in args.impls.split(","):
                        r = _run_case(impl, case, mode, threads)
                        if r is not None:
                            runs.setdefault(impl, []).append(r)
                    if any(rs[-1]["calls"] == 1 for rs in runs.values()):
                        break  # a slow side (>= 5 s per call): one round is enough
                for impl, rs in runs.items():
                    r = dict(rs[0], rounds=len(rs))
                    for k in ("vec_per_s", "vec_per_cpu_s", "peak_mib"):
                        r[k] = statistics.median(x[k] for x in rs)
                    results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)

    # Markdown table: one row per (threads, case, mode), argen next to vqp.
    print("\n| threads | quantizer | mode | argen vec/CPU-s (vec/s) | vqp vec/CPU-s (vec/s) | speed-up (CPU) | "
          "argen peak | vqp peak |")
    print("|---|---|---|---|---|---|---|---|")
    key = lambda r: (r["threads"], r["case"], r["mode"])  # noqa: E731
    by = {}
    for r in results:
        by.setdefault(key(r), {})[r["impl"]] = r
    for (threads, case, mode), d in by.items():
        a, v = d.get("argen"), d.get("vqp")
        cell = lambda r: f"{_fmt_rate(r['vec_per_cpu_s'])} ({_fmt_rate(r['vec_per_s'])})" if r else "-"  # noqa: E731
        mem = lambda r: (f"+{r['peak_mib']:.0f} MiB" if r['peak_mib'] >= 10 else f"+{r['peak_mib']:.1f} MiB") if r else "-"  # noqa: E731
        speed = f"{a['vec_per_cpu_s'] / v['vec_per_cpu_s']:.1f}x" if a and v else "-"
        print(f"| {threads} | {CASES[case]} | {mode} | {cell(a)} | {cell(v)} | {speed} | {mem(a)} | {mem(v)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
