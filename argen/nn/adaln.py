"""Adaptive LayerNorm conditioning (DiT, https://arxiv.org/abs/2212.09748; VAR, https://arxiv.org/abs/2404.02905).

A condition vector c (B, Dc) is mapped by SiLU -> Linear to `chunks` vectors of width C (scales, shifts,
gates) that modulate a non-affine norm: norm(x) * (1 + scale) + shift. The module is an nn.Sequential so
its parameters are named `ada_lin.1.weight/bias` as in VAR's checkpoints.
"""
from __future__ import annotations

from torch import Tensor, nn

from .fast_linear import Linear


class AdaLNModulation(nn.Sequential):
    """SiLU -> Linear(cond_dim, chunks * dim); `forward(c)` returns `chunks` tensors (B, 1, dim)."""

    def __init__(self, cond_dim: int, dim: int, chunks: int):
        super().__init__(nn.SiLU(), Linear(cond_dim, chunks * dim))
        self.chunks, self.dim = chunks, dim

    def forward(self, cond: Tensor) -> tuple[Tensor, ...]:
        out = super().forward(cond)  # (B, chunks*C)
        return out.view(cond.shape[0], 1, self.chunks, self.dim).unbind(2)  # chunks x (B, 1, C)


def modulate(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """x * (1 + scale) + shift, broadcasting (B, 1, C) over tokens."""
    return x * (1 + scale) + shift
