"""Normalisation layers shared by every transformer in argen.

RMSNorm (Zhang & Sennrich, https://arxiv.org/abs/1910.07467) as used by Llama/LlamaGen: statistics in
fp32 whatever the input dtype, learnable scale, no bias. LayerNorm with an optional affine part
(VAR's AdaLN blocks use a non-affine LayerNorm whose scale/shift come from the condition).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormKind = Literal["rms", "layer"]


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 and cast back (LlamaGen's eps is 1e-5)."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32:  # one fused op, bitwise equal to the formula below in fp32
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out * self.weight if self.weight is not None else out


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm computed in fp32 (stable under bf16/fp16 autocast), optionally without affine."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__(dim, eps=eps, elementwise_affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


def make_norm(kind: NormKind, dim: int, eps: float, affine: bool = True) -> nn.Module:
    """Build a norm by name: 'rms' (Llama) or 'layer' (GPT-2 / VAR)."""
    if kind == "rms":
        return RMSNorm(dim, eps, affine)
    if kind == "layer":
        return LayerNorm(dim, eps, affine)
    raise ValueError(f"unknown norm {kind!r}; choose 'rms' or 'layer'")
