"""Categorical head for discrete tokens: cross-entropy training and logit-space sampling.

The projection to the vocabulary lives in the generator (LlamaGen names it `output`), so this head has no
parameters: `loss(logits, target, mask)` and `sample(logits, opts, rng, cfg_scale=..., guided=...)`. The
sampling loop hands every head the step's guidance scale; this one combines the [cond; uncond] halves in
logit space, before temperature and filtering, exactly as LlamaGen and VAR do (a diffusion head combines
noise predictions inside its own denoising loop instead).
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

    def guide(self, logits: Tensor, cfg_scale: float, guided: bool) -> Tensor:
        """The logits sampling draws from: [cond; uncond] rows (2B, ...) combined to (B, ...) when `guided`."""
        return combine(logits, cfg_scale) if guided else logits

    def sample(self, logits: Tensor, opts: SampleOptions, rng: torch.Generator | None = None, *,
               cfg_scale: float = 1.0, guided: bool = False) -> tuple[Tensor, Tensor]:
        """Sample ids (B, ...) from logits (R, ..., V) (R = 2B rows [cond; uncond] when `guided`); scores are
        their log-probabilities (see sample_logits)."""
        return sample_logits(self.guide(logits, cfg_scale, guided), temperature=opts.temperature, top_k=opts.top_k,
                             top_p=opts.top_p, rng=rng)
