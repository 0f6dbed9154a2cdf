"""Pre-norm transformer blocks shared by every sequence generator: the plain Llama / LlamaGen layer and the
AdaLN layer of DiT / VAR. Two classes, so a block's behaviour never depends on which arguments are None.

    Block:       x = x + DropPath(attention(norm1(x)));  x = x + DropPath(feed_forward(norm2(x)))
                 with `cross=True` a cross-attention to a conditioning sequence sits between the two
    AdaLNBlock:  x = x + DropPath(gate1 * attention(norm1(x) * (1 + scale1) + shift1))   (same for the MLP)

Submodule names are LlamaGen's (`attention_norm`, `attention.wqkv/wo`, `ffn_norm`, `feed_forward.w1/w2/w3`)
so official checkpoints load by name; the AdaLN projection is `ada_lin` (VAR). With `shared=True` (VAR-d36)
one projection outside the blocks yields a modulation (B, 1, 6, C) and each block only adds its learned
offset `ada_gss` (1, 1, 6, C).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .adaln import AdaLNModulation, modulate
from .attention import Attention, AttnMask, CrossAttention, CrossContext, QkNorm, QkvBias, Rope
from .kv_cache import LayerKV, PassThroughKV
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


def _attention(dim: int, num_heads: int, head_dim: int | None, qkv_bias: QkvBias, out_bias: bool, qk_norm: QkNorm,
               attn_dropout: float, resid_dropout: float, softmax_scale: float | None, rotary: bool) -> Attention:
    return Attention(dim, num_heads, head_dim=head_dim, qkv_bias=qkv_bias, out_bias=out_bias, qk_norm=qk_norm,
                     attn_dropout=attn_dropout, resid_dropout=resid_dropout, softmax_scale=softmax_scale,
                     rotary=rotary)


class Block(nn.Module):
    """Plain pre-norm layer (LlamaGen): affine norms, attention, MLP; `cross=True` adds `cross_attention_norm`
    and `cross_attention` after the self-attention (the decoder then needs a `context` every forward)."""

    def __init__(self, dim: int, num_heads: int, ffn_hidden: int, *, head_dim: int | None = None,
                 mlp: MlpKind = "swiglu", norm: NormKind = "rms", norm_eps: float = 1e-5,
                 qkv_bias: QkvBias = False, out_bias: bool = False, qk_norm: QkNorm = "none",
                 attn_dropout: float = 0.0, resid_dropout: float = 0.0, ffn_dropout: float = 0.0,
                 drop_path: float = 0.0, softmax_scale: float | None = None, rotary: bool = True,
                 cross: bool = False):
        super().__init__()
        self.attention_norm = make_norm(norm, dim, norm_eps, True)
        self.attention = _attention(dim, num_heads, head_dim, qkv_bias, out_bias, qk_norm, attn_dropout,
                                    resid_dropout, softmax_scale, rotary)
        if cross:
            self.cross_attention_norm = make_norm(norm, dim, norm_eps, True)
            self.cross_attention = CrossAttention(dim, num_heads, head_dim=head_dim, attn_dropout=attn_dropout,
                                                  resid_dropout=resid_dropout)
        self.cross = cross
        self.ffn_norm = make_norm(norm, dim, norm_eps, True)
        self.feed_forward = make_mlp(mlp, dim, ffn_hidden, ffn_dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, *, rope: Rope, mask: AttnMask, kv: LayerKV | PassThroughKV,
                context: CrossContext | None = None) -> Tensor:
        if self.cross and context is None:
            raise ValueError("this block cross-attends to a conditioning sequence: pass its context")
        if not self.training:  # inference: no stochastic depth, fewer module calls per decoding step
            x = x + self.attention(self.attention_norm(x), rope=rope, mask=mask, kv=kv)
            if self.cross:
                x = x + self.cross_attention(self.cross_attention_norm(x), context)
            return x + self.feed_forward(self.ffn_norm(x))
        x = x + self.drop_path(self.attention(self.attention_norm(x), rope=rope, mask=mask, kv=kv))
        if self.cross:
            x = x + self.drop_path(self.cross_attention(self.cross_attention_norm(x), context))
        return x + self.drop_path(self.feed_forward(self.ffn_norm(x)))


class AdaLNBlock(nn.Module):
    """AdaLN layer (DiT, VAR): non-affine norms modulated by six vectors computed from a condition.

    `cond_dim` is the width of the condition vector that the block's own `ada_lin` reads; `shared=True` takes
    the modulation from outside (one projection for all blocks) plus the block's offset `ada_gss`."""

    def __init__(self, dim: int, num_heads: int, ffn_hidden: int, *, cond_dim: int, shared: bool = False,
                 head_dim: int | None = None, mlp: MlpKind = "gelu_tanh", norm: NormKind = "layer",
                 norm_eps: float = 1e-6, qkv_bias: QkvBias = False, out_bias: bool = False, qk_norm: QkNorm = "none",
                 attn_dropout: float = 0.0, resid_dropout: float = 0.0, ffn_dropout: float = 0.0,
                 drop_path: float = 0.0, softmax_scale: float | None = None, rotary: bool = True):
        super().__init__()
        self.attention_norm = make_norm(norm, dim, norm_eps, False)
        self.attention = _attention(dim, num_heads, head_dim, qkv_bias, out_bias, qk_norm, attn_dropout,
                                    resid_dropout, softmax_scale, rotary)
        self.ffn_norm = make_norm(norm, dim, norm_eps, False)
        self.feed_forward = make_mlp(mlp, dim, ffn_hidden, ffn_dropout)
        self.drop_path = DropPath(drop_path)
        self.shared = shared
        if shared:
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, dim))
        else:
            self.ada_lin = AdaLNModulation(cond_dim, dim, 6)

    def modulation(self, cond: Tensor) -> tuple[Tensor, ...]:
        """The six AdaLN vectors (gate1, gate2, scale1, scale2, shift1, shift2), each (B, 1, C), of a condition:
        (B, cond_dim), or with `shared` the shared modulation (B, 1, 6, C). Decoders that reuse one condition
        for many steps compute them once (`Trunk.modulations`)."""
        if self.shared:
            return (self.ada_gss + cond).unbind(2)  # 6 x (B, 1, C)
        return self.ada_lin(cond)  # 6 x (B, 1, C), VAR's order

    def forward(self, x: Tensor, modulation: tuple[Tensor, ...], *, rope: Rope, mask: AttnMask,
                kv: LayerKV | PassThroughKV) -> Tensor:
        gate1, gate2, scale1, scale2, shift1, shift2 = modulation
        h = self.attention(modulate(self.attention_norm(x), scale1, shift1), rope=rope, mask=mask, kv=kv)
        x = x + self.drop_path(gate1 * h)
        return x + self.drop_path(gate2 * self.feed_forward(modulate(self.ffn_norm(x), scale2, shift2)))
