"""AdamW with decoupled weight decay on >=2-D weights only, and a warm-up + decay lr schedule.

Weight decay (Loshchilov & Hutter, https://arxiv.org/abs/1711.05101) is applied to every parameter with
ndim >= 2 — linear/conv kernels *and* embedding tables, as in nanoGPT and LlamaGen's `train_c2i.py` — and
never to 1-D/0-D parameters (biases, norm scales/shifts, scalar gains). A task can exclude more
parameters (e.g. position embeddings, as VAR does) by name with `no_decay=`.

The schedule is a pure function of the optimizer step, `lr_factor(step, ...)`, wrapped in a
`torch.optim.lr_scheduler.LambdaLR`; the lr used for step s (0-based) is `lr * lr_factor(s)`:

    warm-up   s < W:   (s + 1) / W                   (reaches 1 at the last warm-up step)
    then      p = (s - W) / max(1, T - W)  in [0, 1]
      constant:  1
      linear:    1 - (1 - m) * p
      cosine:    m + (1 - m) * (1 + cos(pi * p)) / 2

with W = warmup_steps, T = total steps, m = min_lr_ratio.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .config import TrainConfig


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based). See the module docstring."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * p
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown schedule {schedule!r}; choose 'constant', 'cosine' or 'linear'")


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float,
                 no_decay: Iterable[nn.Parameter] = ()) -> list[dict]:
    """Split trainable `params` into a decayed group (ndim >= 2) and an undecayed one (the rest + `no_decay`).

    Empty groups are dropped; parameter order within a group follows `params` (stable for checkpoints).
    """
    skip = {id(p) for p in no_decay}
    decay, keep = [], []
    for p in params:
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in skip else keep).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(params: Iterable[nn.Parameter], config: TrainConfig, *, lr: float | None = None,
                    betas: tuple[float, float] | None = None, weight_decay: float | None = None,
                    no_decay: Iterable[nn.Parameter] = ()) -> torch.optim.AdamW:
    """AdamW over `params` with the decay split; `lr`/`betas`/`weight_decay` override the config's values
    (e.g. a discriminator with its own lr)."""
    wd = config.weight_decay if weight_decay is None else weight_decay
    groups = decay_groups(params, wd, no_decay)
    if not groups:
        raise ValueError("build_optimizer got no trainable parameters (all have requires_grad=False)")
    return torch.optim.AdamW(groups, lr=config.lr if lr is None else lr,
                             betas=tuple(config.betas if betas is None else betas))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    """LambdaLR applying `lr_factor` with the config's warm-up/schedule over `config.steps`.

    The factor is a plain closure, so it is *not* stored in the scheduler's state_dict: resuming with a
    longer `steps` stretches the schedule instead of replaying the old one.
    """
    warmup, total, kind, floor = config.warmup_steps, config.steps, config.schedule, config.min_lr_ratio

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=warmup, total_steps=total, schedule=kind, min_lr_ratio=floor)

    return LambdaLR(optimizer, factor)
