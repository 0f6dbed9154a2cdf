"""Classifier-free guidance (Ho & Salimans, https://arxiv.org/abs/2207.12598), once for every paradigm.

The batch is doubled to rows [cond; uncond] (LlamaGen's and VAR's order; the uncond rows are the
conditioner's `null`), the network runs once on 2B rows, and the sampling loop hands the step's scale to the
head, which combines the halves in its own space: for logits u + s * (c - u) (`combine`), for a diffusion head
the same on its noise predictions inside its denoising loop. The guidance scale s can follow a schedule over
the decoding steps. s = 1 means no guidance, and `combine` then returns the conditional half unchanged
(bit-exact).

Schedules (`progress` is the fraction of the output already generated before this step, in [0, 1)):
  constant      s = cfg (LlamaGen)
  linear        s = 1 + (cfg - 1) * progress (MUSE / MAR / RandAR ramp over tokens)
  linear_scale  s = 1 + (cfg - 1) * step / (num_steps - 1), i.e. linear in the scale index (VAR). VAR's own
                `cfg=c` computes (1 + c r) cond - c r uncond, which is argen's cfg = 1 + c here.
  interval      s = cfg while lo <= progress <= hi, else 1 (guidance-interval; LlamaGen's cfg_interval)
"""
from __future__ import annotations

from torch import Tensor

from ..types import CFG_SCHEDULES, CfgSchedule


def guidance_scale(cfg: float, schedule: CfgSchedule = "constant", *, step: int = 0, num_steps: int = 1,
                   progress: float | None = None, interval: tuple[float, float] = (0.0, 1.0)) -> float:
    """The guidance scale s at decoding step `step` of `num_steps`."""
    if progress is None:
        progress = step / max(num_steps, 1)
    if schedule == "constant":
        return cfg
    if schedule == "linear":
        return 1.0 + (cfg - 1.0) * progress
    if schedule == "linear_scale":
        return 1.0 + (cfg - 1.0) * (step / (num_steps - 1) if num_steps > 1 else 1.0)
    if schedule == "interval":
        lo, hi = interval
        return cfg if lo <= progress <= hi else 1.0
    raise ValueError(f"unknown cfg schedule {schedule!r}; choose one of {', '.join(CFG_SCHEDULES)}")


def combine(out: Tensor, scale: float) -> Tensor:
    """(2B, ...) rows [cond; uncond] -> u + s * (c - u), shape (B, ...). s == 1 returns c exactly."""
    c, u = out.chunk(2, dim=0)
    if scale == 1.0:
        return c
    return u + scale * (c - u)
