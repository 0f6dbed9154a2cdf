"""Likelihood in bits per dimension, the unit of pixel-level AR papers (PixelCNN, https://arxiv.org/abs/1601.06759).

bits/dim = NLL (nats, summed over a sample) / (dims * ln 2), where dims = C * H * W values per image.
"""
from __future__ import annotations

import math

from torch import Tensor


def bits_per_dim(nll_nats: float | Tensor, dims: int) -> float | Tensor:
    """Convert a per-sample negative log-likelihood in nats to bits per dimension.

    For a per-token mean NLL (as a cross-entropy loss), pass dims=1 after multiplying out, or directly:
    bits_per_dim(mean_ce_nats * num_values, num_values) == mean_ce_nats / ln 2.
    """
    if dims < 1:
        raise ValueError(f"dims must be >= 1 (e.g. 3 * H * W for an RGB image), got {dims}")
    if isinstance(nll_nats, Tensor):
        return nll_nats / (dims * math.log(2.0))
    return float(nll_nats) / (dims * math.log(2.0))
