"""Pre-norm transformer block shared by every sequence generator (Llama / LlamaGen layout, optional AdaLN).

    x = x + DropPath(attention(norm1(x)))          # gated and modulated when AdaLN is on:
    x = x + DropPath(feed_forward(norm2(x)))        # x + gate * f(norm(x) * (1 + scale) + shift)

Submodule names are LlamaGen's (`attention_norm`, `attention.wqkv/wo`, `ffn_norm`, `feed_forward.w1/w2/w3`)
so official checkpoints load by name; the AdaLN projection is `ada_lin` (VAR). With `shared_adaln` (VAR-d36)
one projection outside the blocks yields the modulation (B, 1, 6, C) and each block only adds its learned
offset `ada_gss` (1, 1, 6, C).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .adaln import AdaLNModulation, modulate
from .attention import Attention, QkNorm, QkvBias
from .kv_cache import LayerKV
from .mlp import MlpKind, make_mlp
from .norms import NormKind, make_norm


class DropPath(nn.Module):
    """Stochastic depth (https://arxiv.org/abs/1603.09382): drop the whole residual branch per sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """One transformer layer. `adaln_dim` > 0 turns on AdaLN (norms lose their affine part and the
    block takes `cond` (B, adaln_dim) in forward); 0 means plain pre-norm (LlamaGen). `shared_adaln=True`
    also drops the affine part but takes `cond` as a shared modulation (B, 1, 6, C) plus `ada_gss`."""

    def __init__(self, dim: int, num_heads: int, ffn_hidden: int, *, head_dim: int | None = None,
                 mlp: MlpKind = "swiglu", norm: NormKind = "rms", norm_eps: float = 1e-5,
                 qkv_bias: QkvBias = False, out_bias: bool = False, qk_norm: QkNorm = "none",
                 attn_dropout: float = 0.0, resid_dropout: float = 0.0, ffn_dropout: float = 0.0,
                 drop_path: float = 0.0, adaln_dim: int = 0, shared_adaln: bool = False,
                 softmax_scale: float | None = None):
        super().__init__()
        if shared_adaln and adaln_dim:
            raise ValueError("shared_adaln takes the modulation from outside the block; leave adaln_dim at 0")
        affine = adaln_dim == 0 and not shared_adaln
        self.attention_norm = make_norm(norm, dim, norm_eps, affine)
        self.attention = Attention(dim, num_heads, head_dim=head_dim, qkv_bias=qkv_bias, out_bias=out_bias,
                                   qk_norm=qk_norm, attn_dropout=attn_dropout, resid_dropout=resid_dropout,
                                   softmax_scale=softmax_scale)
        self.ffn_norm = make_norm(norm, dim, norm_eps, affine)
        self.feed_forward = make_mlp(mlp, dim, ffn_hidden, ffn_dropout)
        self.drop_path = DropPath(drop_path)
        self.ada_lin = AdaLNModulation(adaln_dim, dim, 6) if adaln_dim else None
        if shared_adaln:
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, dim))

    def modulation(self, cond: Tensor) -> tuple[Tensor, ...]:
        """The six AdaLN vectors (gate1, gate2, scale1, scale2, shift1, shift2), each (B, 1, C), for `cond`
        ((B, adaln_dim), or (B, 1, 6, C) with shared_adaln). Decoders that reuse one condition for many
        steps compute them once and pass `modulation=` to forward."""
        if hasattr(self, "ada_gss"):
            return (self.ada_gss + cond).unbind(2)  # 6 x (B, 1, C)
        return self.ada_lin(cond)  # 6 x (B, 1, C), VAR's order

    def forward(self, x: Tensor, *, rope: tuple[Tensor, Tensor] | None = None, mask: Tensor | None = None,
                causal: bool = False, kv: LayerKV | None = None, cond: Tensor | None = None,
                modulation: tuple[Tensor, ...] | None = None) -> Tensor:
        attn = dict(rope=rope, mask=mask, causal=causal, kv=kv)
        if self.ada_lin is None and not hasattr(self, "ada_gss"):
            if not self.training:  # inference: no stochastic depth, fewer module calls per decoding step
                x = x + self.attention(self.attention_norm(x), **attn)
                return x + self.feed_forward(self.ffn_norm(x))
            x = x + self.drop_path(self.attention(self.attention_norm(x), **attn))
            return x + self.drop_path(self.feed_forward(self.ffn_norm(x)))
        if modulation is None:
            if cond is None:
                raise ValueError("this block uses AdaLN: pass cond (B, adaln_dim), or (B, 1, 6, C) with shared_adaln")
            modulation = self.modulation(cond)
        gate1, gate2, scale1, scale2, shift1, shift2 = modulation
        x = x + self.drop_path(gate1 * self.attention(modulate(self.attention_norm(x), scale1, shift1), **attn))
        return x + self.drop_path(gate2 * self.feed_forward(modulate(self.ffn_norm(x), scale2, shift2)))
