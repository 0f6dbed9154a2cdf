"""Feed-forward blocks: SwiGLU (Shazeer, https://arxiv.org/abs/2002.05202; Llama/LlamaGen) and the
GELU MLP of GPT-2 / VAR. Parameter names follow LlamaGen (`w1`, `w2`, `w3`) and VAR (`fc1`, `fc2`) so
official checkpoints map by name.
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from .fast_linear import Linear

MlpKind = Literal["swiglu", "gelu", "gelu_tanh"]


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of k that is >= n."""
    return n if n % k == 0 else n + k - n % k


def llama_hidden_dim(dim: int, multiple_of: int = 256) -> int:
    """LlamaGen's SwiGLU width: 2/3 of 4*dim, rounded up to a multiple of 256 (768 -> 2048, 3200 -> 8704)."""
    return find_multiple(int(2 * 4 * dim / 3), multiple_of)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), no biases, dropout on the output."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = Linear(dim, hidden, bias=False)
        self.w3 = Linear(dim, hidden, bias=False)
        self.w2 = Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.dropout(out) if self.training else out


class GeluMLP(nn.Module):
    """fc2(gelu(fc1 x)) with biases; `approximate='tanh'` is VAR's choice."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, approximate: str = "none"):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)
        self.approximate = approximate
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))
        return self.dropout(out) if self.training else out


def make_mlp(kind: MlpKind, dim: int, hidden: int, dropout: float = 0.0) -> nn.Module:
    if kind == "swiglu":
        return SwiGLU(dim, hidden, dropout)
    if kind in ("gelu", "gelu_tanh"):
        return GeluMLP(dim, hidden, dropout, approximate="tanh" if kind == "gelu_tanh" else "none")
    raise ValueError(f"unknown mlp {kind!r}; choose 'swiglu', 'gelu' or 'gelu_tanh'")
