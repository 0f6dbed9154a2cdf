"""The transformer trunk every sequence generator composes (raster, random order, pixel, next-scale, and the
masked ones): a stack of `Block`s or `AdaLNBlock`s with stochastic depth growing linearly over depth, one
forward over (B, T, C) with RoPE tables, an attention mask and a static KV cache, and the AdaLN modulations
of a condition computed once.

`Trunk` *is* the ModuleList of its blocks, so a generator that stores it as `self.layers` (LlamaGen) or
`self.blocks` (VAR) keeps the official parameter names. Generators add their own embeddings, final norm and
output projection around it; positions come from `rope.GridRope` (or none, VAR) and caches from `new_cache`.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .attention import AttnMask, CrossContext, QkNorm, QkvBias, Rope
from .block import AdaLNBlock, Block
from .kv_cache import NO_CACHE, KVCache, NoCache
from .mlp import MlpKind
from .norms import NormKind

AdaLNKind = Literal["none", "block", "shared"]


class Trunk(nn.ModuleList):
    """`depth` pre-norm layers of width `dim`. `adaln`: "none" (plain blocks, LlamaGen), "block" (each block
    projects the condition itself, DiT/VAR) or "shared" (VAR-d36: the caller projects once, each block adds
    its offset). `rotary=False` builds attention without rotary positions (VAR). `cross=True` gives plain
    blocks a cross-attention to a conditioning sequence (a caption), whose keys/values `contexts` projects."""

    def __init__(self, dim: int, depth: int, num_heads: int, ffn_hidden: int, *, head_dim: int | None = None,
                 mlp: MlpKind = "swiglu", norm: NormKind = "rms", norm_eps: float = 1e-5, qkv_bias: QkvBias = False,
                 out_bias: bool = False, qk_norm: QkNorm = "none", attn_dropout: float = 0.0,
                 resid_dropout: float = 0.0, ffn_dropout: float = 0.0, drop_path: float = 0.0,
                 adaln: AdaLNKind = "none", cond_dim: int = 0, softmax_scale: float | None = None,
                 rotary: bool = True, cross: bool = False):
        if adaln not in ("none", "block", "shared"):
            raise ValueError(f"unknown adaln {adaln!r}; choose 'none', 'block' or 'shared'")
        if cross and adaln != "none":
            raise ValueError("cross-attention is built for plain blocks (adaln='none')")
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        common = dict(head_dim=head_dim, mlp=mlp, norm=norm, norm_eps=norm_eps, qkv_bias=qkv_bias, out_bias=out_bias,
                      qk_norm=qk_norm, attn_dropout=attn_dropout, resid_dropout=resid_dropout, ffn_dropout=ffn_dropout,
                      softmax_scale=softmax_scale, rotary=rotary)
        if adaln == "none":
            blocks = [Block(dim, num_heads, ffn_hidden, drop_path=rates[i], cross=cross, **common)
                      for i in range(depth)]
        else:
            blocks = [AdaLNBlock(dim, num_heads, ffn_hidden, cond_dim=cond_dim or dim, shared=adaln == "shared",
                                 drop_path=rates[i], **common) for i in range(depth)]
        super().__init__(blocks)
        self.adaln = adaln
        self.cross = cross
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads

    def new_cache(self, rows: int, max_len: int, *, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        """A static KV cache for `rows` sequences of up to `max_len` slots, one buffer pair for all layers."""
        return KVCache(len(self), rows, self.num_heads, max_len, self.head_dim, dtype=dtype, device=device)

    def modulations(self, cond: Tensor) -> list[tuple[Tensor, ...]]:
        """Each AdaLN block's six vectors for a condition (B, cond_dim), or the shared modulation (B, 1, 6, C)."""
        if self.adaln == "none":
            raise ValueError("this trunk has plain blocks: there is nothing to modulate")
        return [b.modulation(cond) for b in self]

    def contexts(self, ctx: Tensor, mask: Tensor | None = None) -> list[CrossContext]:
        """Each block's cross-attention keys/values of a conditioning sequence (B, Tc, C), valid `mask` (B, Tc)."""
        if not self.cross:
            raise ValueError("this trunk has no cross-attention: there is no context to project")
        return [b.cross_attention.context(ctx, mask) for b in self]

    def forward(self, x: Tensor, *, rope: Rope = None, mask: AttnMask, cache: KVCache | NoCache = NO_CACHE,
                modulations: Sequence[tuple[Tensor, ...]] = (), contexts: Sequence[CrossContext] = ()) -> Tensor:
        """Hidden states (B, T, C) after every block; AdaLN trunks take `modulations` (see `modulations`),
        cross-attending ones `contexts` (see `contexts`)."""
        if self.cross:
            for i, block in enumerate(self):
                x = block(x, rope=rope, mask=mask, kv=cache.layers[i], context=contexts[i])
            return x
        if self.adaln == "none":
            for i, block in enumerate(self):
                x = block(x, rope=rope, mask=mask, kv=cache.layers[i])
            return x
        for i, block in enumerate(self):
            x = block(x, modulations[i], rope=rope, mask=mask, kv=cache.layers[i])
        return x
