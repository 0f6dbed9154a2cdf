"""Next-token generation in raster order: LlamaGen (Sun et al., https://arxiv.org/abs/2406.06525).

A stock Llama decoder (RMSNorm, SwiGLU, fused-qkv attention without biases) over the sequence

    [class token, tok(z_0), ..., tok(z_{N-2})]  ->  logits for z_0 .. z_{N-1}

with 2-D RoPE on the token grid and one class-embedding prefix token (null class for CFG). Parameter names
are LlamaGen's (`tok_embeddings`, `cls_embedding.embedding_table`, `layers.{i}.attention.wqkv/wo`,
`layers.{i}.feed_forward.w1/w2/w3`, `layers.{i}.attention_norm/ffn_norm`, `norm`, `output`), so an official
`c2i_*.pt` maps one-to-one. Set `prefix_rope="zero"` to reproduce LlamaGen's zero RoPE rows for the prefix
(the official presets do); new models default to leaving the prefix unrotated.

Decoding keeps a static KV cache: the prefix is prefilled at step 0, then each step feeds one token, writes
its keys/values by index and attends over the filled slots only. RoPE tables are buffers computed once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..conditioning.labels import ClassEmbedder, as_cond
from ..heads.categorical import CategoricalHead
from ..nn import Block, KVCache, Linear, RMSNorm, grid_rope_table, llama_hidden_dim
from ..registry import register
from ..types import Cond, DecodeState, LossOutput, SampleOptions
from .base import Generator, GeneratorConfig


@dataclass(frozen=True, kw_only=True)
class RasterConfig(GeneratorConfig):
    """LlamaGen-style decoder. Defaults are GPT-B (111M params with 16384 codes and 1000 classes)."""

    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    ffn_hidden: int | None = None  # None: LlamaGen's rule, 2/3 * 4 * dim rounded up to a multiple of 256
    norm_eps: float = 1e-5
    rope: Literal["2d", "1d"] = "2d"
    rope_base: float = 10000.0
    prefix_rope: Literal["identity", "zero"] = "identity"
    embed_dropout: float = 0.1
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    init_std: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        if len(self.scales) != 1:
            raise ValueError(f"a raster generator models one token grid; got scales {self.scales} "
                             "(use the next-scale generator for several scales)")
        if self.dim < 1 or self.depth < 1 or self.num_heads < 1:
            raise ValueError("dim, depth and num_heads must be positive")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.rope == "2d" and self.head_dim % 4:
            raise ValueError(f"2-D RoPE needs head_dim = dim / num_heads divisible by 4, got {self.head_dim}; "
                             "change dim or num_heads, or set rope=1d")
        if self.rope == "1d" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
        if self.ffn_hidden is not None and self.ffn_hidden < 1:
            raise ValueError(f"ffn_hidden must be positive or null (LlamaGen rule), got {self.ffn_hidden}")
        for name in ("embed_dropout", "resid_dropout", "ffn_dropout", "attn_dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        return self.ffn_hidden or llama_hidden_dim(self.dim)

    @property
    def prefix_len(self) -> int:
        """Conditioning tokens before the image tokens (one class token)."""
        return 1


@register("raster", RasterConfig)
class RasterGenerator(Generator):
    """LlamaGen c2i transformer with the argen sampling state machine."""

    config: RasterConfig

    def __init__(self, config: RasterConfig):
        super().__init__(config)
        c = config
        self.cls_embedding = ClassEmbedder(c.num_classes, c.dim)
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.tok_dropout = nn.Dropout(c.embed_dropout)
        rates = [c.drop_path * i / max(c.depth - 1, 1) for i in range(c.depth)]  # stochastic depth grows with depth
        self.layers = nn.ModuleList(
            Block(c.dim, c.num_heads, c.hidden_dim, mlp="swiglu", norm="rms", norm_eps=c.norm_eps,
                  attn_dropout=c.attn_dropout, resid_dropout=c.resid_dropout, ffn_dropout=c.ffn_dropout,
                  drop_path=rates[i])
            for i in range(c.depth))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.output = Linear(c.dim, c.vocab_size, bias=False)
        self.head = CategoricalHead()
        h, w = c.grid
        cos, sin = grid_rope_table(h, w, c.head_dim, base=c.rope_base, num_prefix=c.prefix_len,
                                   prefix_mode=c.prefix_rope, kind=c.rope)  # (P + N, D/2) each
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LlamaGen init: N(0, 0.02) for linears and embeddings, unit norms, zero output head."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=self.config.init_std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.output.weight)

    # ------------------------------------------------------------------ network

    def _run(self, x: Tensor, start: int, *, cache: KVCache | None = None) -> Tensor:
        """Transformer over x (R, T, C) occupying sequence slots start..start+T-1; logits (R, T, V) fp32."""
        T = x.shape[1]
        rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T])  # views, (T, D/2)
        return self._trunk(x, rope, causal=cache is None, cache=cache)

    def _trunk(self, x: Tensor, rope: tuple[Tensor, Tensor], *, causal: bool = False, mask: Tensor | None = None,
               cache: KVCache | None = None) -> Tensor:
        """Blocks, final norm and output projection over x (R, T, C) with RoPE tables (T or R x T, D/2) and an
        optional attention mask (T, length); logits (R, T, V) fp32. Subclasses with other orders call this."""
        for i, layer in enumerate(self.layers):
            x = layer(x, rope=rope, mask=mask, causal=causal, kv=None if cache is None else cache.layers[i])
        return self.output(self.norm(x)).float()

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        """Input embeddings (B, T, C) of tokens (B, T) that sit at token indices start..start+T-1."""
        return self.tok_embeddings(tokens)

    def forward(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Teacher-forced logits (B, N, V) for tokens (B, N) given class labels (B,) (-1 = unconditional)."""
        ids = self.cls_embedding.ids(labels.to(tokens.device))
        return self._logits(tokens, ids)

    def _logits(self, tokens: Tensor, ids: Tensor) -> Tensor:
        x = torch.cat([self.cls_embedding(ids), self._embed(tokens[:, :-1], 0)], dim=1)  # (B, P + N - 1, C)
        logits = self._run(self.tok_dropout(x), 0)  # (B, P + N - 1, V)
        return logits[:, self.config.prefix_len - 1:]  # (B, N, V): position P-1+i predicts z_i

    def loss(self, tokens: Tensor, cond: Cond | Tensor, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE over all N tokens; labels are dropped to the null class with p=class_dropout in training."""
        cond = as_cond(cond, tokens.device)
        self._check_tokens(tokens)
        ids = self.cls_embedding.ids(cond.labels)
        if self.training:
            ids = self.cls_embedding.drop(ids, self.config.class_dropout, rng)
        return self.head.loss(self._logits(tokens, ids), tokens)

    # ------------------------------------------------------------------ sampling state machine

    def begin(self, cond: Cond, *, batch_size: int, opts: SampleOptions) -> DecodeState:
        rows = self._check_rows(cond, batch_size)
        device = self.device
        ids = self.cls_embedding.ids(cond.labels.to(device))
        c, n = self.config, self.config.num_tokens
        # the last token is never fed back, so P + N - 1 slots suffice
        cache = KVCache(c.depth, rows, c.num_heads, c.prefix_len + n - 1, c.head_dim,
                        dtype=self.dtype, device=device)
        tokens = torch.zeros(batch_size, n, dtype=torch.long, device=device)
        known = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
        return DecodeState(tokens, known, step=0, num_steps=n, cache={"kv": cache, "ids": ids, "rows": rows})

    def predict(self, state: DecodeState) -> Tensor:
        """Logits (R, 1, V) for token `state.step`: prefill the prefix at step 0, then feed the previous token."""
        kv: KVCache = state.cache["kv"]
        t = state.step
        if t == 0:
            x, start = self.cls_embedding(state.cache["ids"]), 0  # (R, P, C)
        else:
            x = self._embed(state.tokens[:, t - 1:t], t - 1)  # (B, 1, C)
            rows = state.cache["rows"]
            if rows != x.shape[0]:
                x = x.repeat(rows // x.shape[0], 1, 1)  # (R, 1, C): same token for cond and uncond rows
            start = self.config.prefix_len + t - 1
        kv.prepare(start, x.shape[1])
        return self._run(x, start, cache=kv)[:, -1:]  # (R, 1, V)

    def commit(self, state: DecodeState, tokens: Tensor, scores: Tensor) -> None:
        t = state.step
        state.tokens[:, t] = tokens[:, 0]
        state.known[:, t] = True
        state.step = t + 1
