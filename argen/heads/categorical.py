"""Categorical head for discrete tokens: cross-entropy training and logit-space sampling.

The projection to the vocabulary lives in the generator (LlamaGen names it `output`), so this head has no
parameters: `loss(logits, target, mask)` and `sample(logits, opts, rng)`. CFG combines the [cond; uncond]
halves in logit space (`guide`), before temperature and filtering, exactly as LlamaGen and VAR do.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sampling.guidance import combine
from ..sampling.logits import sample_logits
from ..types import LossOutput, SampleOptions

LN2 = math.log(2.0)


class CategoricalHead(nn.Module):
    """Logits (..., V) -> cross-entropy / sampled token ids."""

    def loss(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> LossOutput:
        """Mean CE over positions (only where `mask` is True, if given).

        Metrics: `nll` (nats/token), `bits_per_token` (= nll / ln 2) and top-1 `accuracy`, all detached.
        """
        V = logits.shape[-1]
        nll = F.cross_entropy(logits.float().reshape(-1, V), target.reshape(-1), reduction="none")  # (B*L,)
        correct = (logits.detach().argmax(-1).reshape(-1) == target.reshape(-1)).float()
        if mask is None:
            loss, acc = nll.mean(), correct.mean()
        else:
            w = mask.reshape(-1).float()
            denom = w.sum().clamp(min=1.0)
            loss, acc = (nll * w).sum() / denom, (correct * w).sum() / denom
        value = loss.detach()
        return LossOutput(loss, {"nll": value, "bits_per_token": value / LN2, "accuracy": acc})

    def guide(self, logits: Tensor, scale: float) -> Tensor:
        """[cond; uncond] logits (2B, ...) -> guided logits (B, ...)."""
        return combine(logits, scale)

    def sample(self, logits: Tensor, opts: SampleOptions, rng: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Sample ids (...) from logits (..., V); scores are their log-probabilities (see sample_logits)."""
        return sample_logits(logits, temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, rng=rng)
