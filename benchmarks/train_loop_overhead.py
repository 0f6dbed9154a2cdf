"""Overhead of argen.train.Trainer vs a hand-written AdamW loop on the same small MLP (CPU).

    python benchmarks/train_loop_overhead.py --steps 300 --width 256 --batch 64 --threads 1

Both loops do the same work (forward, backward, clip, AdamW step, lr schedule); the Trainer adds the
StepContext/phase bookkeeping, metric accumulation, JSONL logging and one final checkpoint.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from argen.train import TrainConfig, Trainer, build_optimizer, build_scheduler
from argen.types import LossOutput


class Task(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 10))

    def forward(self, batch, ctx=None):
        x, y = batch
        return LossOutput(F.cross_entropy(self.net(x), y))


def plain(task, data, cfg):
    opt = build_optimizer(task.parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    it = iter(DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True))
    for _ in range(cfg.steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True))
            batch = next(it)
        opt.zero_grad(set_to_none=True)
        task(batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(4096, 64, generator=g), torch.randint(0, 10, (4096,), generator=g))
    cfg = TrainConfig(steps=a.steps, batch_size=a.batch, lr=1e-3, warmup_steps=10, schedule="cosine", log_every=50,
                      ckpt_every=0)
    best = {"plain": float("inf"), "trainer": float("inf")}
    for _ in range(a.repeats):
        t = time.perf_counter()
        plain(Task(a.width), data, cfg)
        best["plain"] = min(best["plain"], time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            Trainer(cfg, Task(a.width), data, d).fit()
            best["trainer"] = min(best["trainer"], time.perf_counter() - t)
    for k, v in best.items():
        print(f"{k:8s} {a.steps / v:8.1f} steps/s  ({1e3 * v / a.steps:.2f} ms/step, best of {a.repeats})")
    print(f"overhead {100 * (best['trainer'] / best['plain'] - 1):+.1f}% (includes one final checkpoint)")


if __name__ == "__main__":
    main()
