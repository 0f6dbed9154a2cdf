"""Step schedules for iterative decoders: how many tokens stay masked after each step (MaskGIT,
https://arxiv.org/abs/2202.04200) and temperature annealing. Pure functions of progress t in [0, 1].
Guidance-scale schedules live in guidance.py.
"""
from __future__ import annotations

import math
from typing import Literal, get_args

MaskSchedule = Literal["cosine", "linear", "square", "sqrt", "exp"]
MASK_SCHEDULES: tuple[str, ...] = get_args(MaskSchedule)


def mask_ratio(t: float, kind: MaskSchedule = "cosine") -> float:
    """Fraction of tokens still masked at progress t (1 at t=0, 0 at t=1)."""
    t = min(max(t, 0.0), 1.0)
    if kind == "cosine":
        return math.cos(math.pi / 2 * t)
    if kind == "linear":
        return 1.0 - t
    if kind == "square":
        return 1.0 - t * t
    if kind == "sqrt":
        return 1.0 - math.sqrt(t)
    if kind == "exp":  # fast early decay, normalised to hit 0 at t=1
        return (math.exp(-5 * t) - math.exp(-5)) / (1 - math.exp(-5))
    raise ValueError(f"unknown mask schedule {kind!r}; choose one of {', '.join(MASK_SCHEDULES)}")


def tokens_per_step(total: int, num_steps: int, kind: MaskSchedule = "cosine") -> list[int]:
    """How many new tokens each of `num_steps` steps decodes; every step >= 1 and the sum is `total`."""
    if not 1 <= num_steps <= total:
        raise ValueError(f"num_steps must be in [1, {total}] for {total} tokens, got {num_steps}")
    masked = [round(total * mask_ratio((i + 1) / num_steps, kind)) for i in range(num_steps)]
    counts, prev = [], total
    for i, m in enumerate(masked):
        left = num_steps - i - 1  # steps after this one each need >= 1 token
        m = min(max(m, left), prev - 1)
        counts.append(prev - m)
        prev = m
    return counts


def anneal_temperature(temperature: float, t: float, kind: Literal["constant", "linear"] = "linear") -> float:
    """Temperature at progress t: constant, or linearly annealed to 0 at t=1 (MaskGIT's choice noise)."""
    if kind == "constant":
        return temperature
    if kind == "linear":
        return temperature * (1.0 - min(max(t, 0.0), 1.0))
    raise ValueError(f"unknown temperature schedule {kind!r}; choose constant or linear")
