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
    """Logits (..., V) -> cross-entropy / sampled token ids. `label_smoothing` (MaskGIT trains with 0.1) changes
    the loss only; the reported `nll` is always the plain negative log-likelihood."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def loss(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> LossOutput:
        """Mean CE over positions (only where `mask` is True, if given).

        Metrics: `nll` (nats/token), `bits_per_token` (= nll / ln 2) and top-1 `accuracy`, all detached.
        """
        V = logits.shape[-1]
        flat, tgt = logits.float().reshape(-1, V), target.reshape(-1)
        nll = F.cross_entropy(flat, tgt, reduction="none")  # (B*L,)
        objective = nll if self.label_smoothing == 0 else F.cross_entropy(
            flat, tgt, reduction="none", label_smoothing=self.label_smoothing)
        correct = (logits.detach().argmax(-1).reshape(-1) == tgt).float()
        if mask is None:
            loss, value, acc = objective.mean(), nll.detach().mean(), correct.mean()
        else:
            w = mask.reshape(-1).float()
            denom = w.sum().clamp(min=1.0)
            loss = (objective * w).sum() / denom
            value, acc = (nll.detach() * w).sum() / denom, (correct * w).sum() / denom
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
