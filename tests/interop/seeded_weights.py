"""Deterministic stand-in weights for official-checkpoint parity tests (no official code needed).

A weight table lists every tensor of an official checkpoint as `[key, shape, mean, std]` in sorted key
order. `seeded_state_dict(table, seed)` draws `mean + randn(shape) * std` from one seeded generator in
table order, so the golden-file generator (run once against the official code) and the tests rebuild the
identical state dict. `weight_table(shapes)` picks the mean/std per key with a rule that keeps
activations O(1) through deep stacks (so greedy decoding has clear argmax margins):

    norm weights (1-D, name contains "norm")   mean 1, std 0.1
    biases, other 1-D tensors                  mean 0, std 0.05
    embeddings / codebooks                     mean 0, std 1
    float buffers with no learned meaning       0 (e.g. LlamaGen's `codebook_used`)
    linear / conv weights                      mean 0, std fan_in ** -0.5
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

ZERO_KEYS = ("codebook_used",)


def weight_stats(key: str, shape: Sequence[int]) -> tuple[float, float]:
    """(mean, std) of the stand-in weight for one checkpoint key."""
    if any(z in key for z in ZERO_KEYS):
        return 0.0, 0.0
    if len(shape) == 1:
        return (1.0, 0.1) if ("norm" in key and key.endswith("weight")) else (0.0, 0.05)
    if "embedding" in key or "tok_embeddings" in key:
        return 0.0, 1.0
    fan_in = math.prod(shape[1:])
    return 0.0, fan_in ** -0.5


def weight_table(shapes: dict[str, Sequence[int]]) -> list[list]:
    """`{key: shape}` -> sorted `[key, shape, mean, std]` rows."""
    return [[k, list(shapes[k]), *weight_stats(k, shapes[k])] for k in sorted(shapes)]


def seeded_state_dict(table: Iterable[Sequence], seed: int) -> dict[str, torch.Tensor]:
    """Rebuild the state dict described by `table` (fp32, CPU) from `seed`."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, mean, std in table:
        out[key] = mean + torch.randn(tuple(shape), generator=g) * std
    return out
