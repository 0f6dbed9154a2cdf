"""Codebook health of a discrete tokenizer: usage (share of codes used) and perplexity.

Perplexity = exp(H(p)) of the empirical code distribution p (natural log): it equals the number of
codes when all are used equally and 1 when a single code is used (codebook collapse); see e.g. the
VQ-VAE-2 and ViT-VQGAN papers. Count ids over a whole evaluation set (`CodeCounter`), not one batch.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def code_counts(ids: Tensor, codebook_size: int) -> Tensor:
    """How often each code id occurs in `ids` (any shape, int) -> int64 (codebook_size,)."""
    ids = ids.detach().reshape(-1).long()
    if ids.numel() and (ids.min() < 0 or ids.max() >= codebook_size):
        raise ValueError(f"code ids must lie in [0, {codebook_size}), got [{ids.min().item()}, {ids.max().item()}]")
    return torch.bincount(ids.cpu(), minlength=codebook_size)


def usage_from_counts(counts: Tensor) -> float:
    """Percentage (0-100) of codes used at least once."""
    return 100.0 * (counts > 0).sum().item() / counts.numel()


def perplexity_from_counts(counts: Tensor) -> float:
    """exp(entropy) of the empirical code distribution, in [1, codebook_size]."""
    total = counts.sum().item()
    if total == 0:
        raise ValueError("no code ids were counted")
    p = counts.double() / total
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def codebook_usage(ids: Tensor, codebook_size: int) -> float:
    """Percentage of the codebook used by `ids`."""
    return usage_from_counts(code_counts(ids, codebook_size))


def codebook_perplexity(ids: Tensor, codebook_size: int) -> float:
    """Perplexity of the code distribution in `ids`."""
    return perplexity_from_counts(code_counts(ids, codebook_size))


class CodeCounter:
    """Accumulate code counts over batches: `update(ids)`, then `usage` (%) and `perplexity`."""

    def __init__(self, codebook_size: int):
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        self.counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, ids: Tensor) -> None:
        self.counts += code_counts(ids, self.counts.numel())

    @property
    def usage(self) -> float:
        return usage_from_counts(self.counts)

    @property
    def perplexity(self) -> float:
        return perplexity_from_counts(self.counts)

    def as_dict(self) -> dict[str, float]:
        return {"codebook_usage_pct": self.usage, "codebook_perplexity": self.perplexity,
                "codebook_size": self.counts.numel(), "num_ids": int(self.counts.sum())}
