"""Multi-head self-attention through `F.scaled_dot_product_attention` (Vaswani et al.,
https://arxiv.org/abs/1706.03762), with optional RoPE, an index-written KV cache and VAR's l2-normalised
attention. Parameter names follow LlamaGen (`wqkv` fused q|k|v along dim 0, `wo`).
"""
from __future__ import annotations

import math
from typing import Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fast_linear import Linear
from .kv_cache import LayerKV, PassThroughKV
from .rope import apply_rope

QkNorm = Literal["none", "l2"]
QkvBias = Literal[False, True, "qv"]
# Which keys a query may see: a bool tensor (True = may attend; (T, length) or broadcastable), "causal" (SDPA's
# causal kernel over a full sequence) or "full" (everything). A cached forward passes `KVCache.attn_mask`.
AttnMask = Union[Tensor, Literal["causal", "full"]]
Rope = Union[tuple[Tensor, Tensor], None]  # (cos, sin) tables; None only for attention built with rotary=False


class Attention(nn.Module):
    """Self-attention over (B, L, C).

    `forward(x, rope=(cos, sin), mask=..., kv=...)`: `mask` is an `AttnMask` ("causal", "full" or a bool
    tensor such as VAR's block-causal mask); `kv` is a layer of a static `KVCache` (keys/values are written
    into it and the visible slots are read back; pass `cache.attn_mask` as the mask) or the pass-through of
    `NO_CACHE` for a full-sequence forward. `rotary=False` (VAR) builds attention without rotary positions.
    `qk_norm="l2"` (VAR): q and k are unit-normalised per head and q is scaled by a learned per-head
    temperature exp(min(s, log 100)), s initialised to log 4; SDPA then uses scale 1.
    `qkv_bias="qv"` (VAR): learned biases `q_bias`, `v_bias` on q and v only; k has none (a k bias is not
    softmax-invariant once k is l2-normalised, so it must stay exactly zero).
    """

    def __init__(self, dim: int, num_heads: int, *, head_dim: int | None = None, qkv_bias: QkvBias = False,
                 out_bias: bool = False, qk_norm: QkNorm = "none", attn_dropout: float = 0.0,
                 resid_dropout: float = 0.0, softmax_scale: float | None = None, rotary: bool = True):
        super().__init__()
        self.rotary = rotary
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = num_heads * self.head_dim
        if qkv_bias not in (False, True, "qv"):
            raise ValueError(f"unknown qkv_bias {qkv_bias!r}; choose False, True or 'qv' (q and v only)")
        self.wqkv = Linear(dim, 3 * inner, bias=qkv_bias is True)
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(inner))
            self.v_bias = nn.Parameter(torch.zeros(inner))
        self.wo = Linear(inner, dim, bias=out_bias)
        self.qk_norm = qk_norm
        if qk_norm == "l2":
            self.qk_scale = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
        elif qk_norm != "none":
            raise ValueError(f"unknown qk_norm {qk_norm!r}; choose 'none' or 'l2'")
        self.attn_dropout = attn_dropout
        self.softmax_scale = softmax_scale  # None: 1/sqrt(head_dim) (1 with l2 qk_norm); VAR without l2: 0.25/sqrt(64)
        self.resid_dropout = nn.Dropout(resid_dropout)

    def forward(self, x: Tensor, *, rope: Rope, mask: AttnMask, kv: LayerKV | PassThroughKV) -> Tensor:
        B, L, _ = x.shape
        if hasattr(self, "q_bias"):  # q|0|v bias (VAR)
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            qkv = (self.wqkv(x) + bias).view(B, L, 3, self.num_heads, self.head_dim)  # wqkv may use packed weights
        else:
            qkv = self.wqkv(x).view(B, L, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
        scale = self.softmax_scale
        if self.qk_norm == "l2":
            q, k, v = qkv.unbind(0)
            q = F.normalize(q, dim=-1) * self.qk_scale.clamp(max=math.log(100.0)).exp()
            k = F.normalize(k, dim=-1)
            scale = 1.0
            if self.rotary:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        elif self.rotary:
            q, k = apply_rope(qkv[:2], *rope).unbind(0)  # q and k rotated in one pass: (2, B, H, L, D)
            v = qkv[2]
        else:
            q, k, v = qkv.unbind(0)  # 3 x (B, H, L, D)
        k, v = kv.update(k, v)  # a cache returns (B, H, length, D) views of its buffers
        # SDPA's is_causal aligns top-left, which is wrong when T < length: cached forwards pass the cache's mask
        if isinstance(mask, Tensor):
            attn_mask, causal = mask, False
        elif mask == "causal" or mask == "full":
            attn_mask, causal = None, mask == "causal"
        else:
            raise ValueError(f"attention mask must be a bool tensor, 'causal' or 'full'; got {mask!r}")
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, scale=scale,
                                             dropout_p=self.attn_dropout if self.training else 0.0)  # (B, H, L, D)
        out = out.transpose(1, 2).reshape(B, L, self.num_heads * self.head_dim)
        out = self.wo(out)
        return self.resid_dropout(out) if self.training else out


def with_key_padding(mask: AttnMask, keys: Tensor | None, q_len: int, k_len: int) -> AttnMask:
    """`mask` restricted to the valid keys (B, >= k_len) bool (a padded caption prefix); None keeps it as is.
    Returns a (B, 1, q_len, k_len) bool mask (True = may attend)."""
    if keys is None:
        return mask
    if isinstance(mask, Tensor):
        base = mask
    elif mask == "causal":  # a full sequence from slot 0: query i sees keys <= i
        base = torch.ones(q_len, k_len, dtype=torch.bool, device=keys.device).tril_()
    elif mask == "full":
        base = torch.ones(q_len, k_len, dtype=torch.bool, device=keys.device)
    else:
        raise ValueError(f"attention mask must be a bool tensor, 'causal' or 'full'; got {mask!r}")
    return base & keys[:, None, None, :k_len]


# A block's view of a conditioning sequence: its keys and values (B, H, Tc, D), projected once per forward or
# per sampling run, and which context tokens are real (B, 1, 1, Tc) bool, or None when all are.
CrossContext = tuple[Tensor, Tensor, Union[Tensor, None]]


class CrossAttention(nn.Module):
    """Attention from a sequence (B, L, C) to a conditioning sequence (B, Tc, C): a caption's tokens (the
    cross-attention mode of text-to-image decoders, e.g. Parti, Infinity). No positions: the context is a
    set of features the encoder already ordered. Names: `wq`, `wkv` (k|v fused along dim 0), `wo`."""

    def __init__(self, dim: int, num_heads: int, *, head_dim: int | None = None, attn_dropout: float = 0.0,
                 resid_dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = num_heads * self.head_dim
        self.wq = Linear(dim, inner, bias=False)
        self.wkv = Linear(dim, 2 * inner, bias=False)
        self.wo = Linear(inner, dim, bias=False)
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(resid_dropout)

    def context(self, ctx: Tensor, mask: Tensor | None = None) -> CrossContext:
        """Keys and values of a context (B, Tc, C) with its valid tokens `mask` (B, Tc) bool (None: all)."""
        B, T, _ = ctx.shape
        k, v = self.wkv(ctx).view(B, T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return k, v, None if mask is None else mask[:, None, None, :]

    def forward(self, x: Tensor, context: CrossContext) -> Tensor:
        B, L, _ = x.shape
        k, v, mask = context
        if k.shape[0] != B:
            raise ValueError(f"cross-attention context has {k.shape[0]} rows for {B} query rows")
        q = self.wq(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        out = self.wo(out.transpose(1, 2).reshape(B, L, self.num_heads * self.head_dim))
        return self.resid_dropout(out) if self.training else out
