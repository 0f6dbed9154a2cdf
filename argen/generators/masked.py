"""Masked generative transformer over discrete tokens: MaskGIT (Chang et al., https://arxiv.org/abs/2202.04200).

A bidirectional transformer reads [prefix (conditioner), tok(z_0 or [MASK]), ..., tok(z_{N-1} or [MASK])] with a
learned absolute position embedding per token and predicts every position's token; the loss is the
cross-entropy on the masked positions only (label smoothing as MaskGIT's 0.1 option). Training masks, per
sample, ceil(gamma(r) N) random positions with r ~ U(0, 1) and gamma the mask schedule (cosine: MaskGIT's
choice; the fraction masked is then biased towards high ratios, as sampling starts from a fully masked grid).
The token table has one extra row, the [MASK] id `vocab_size`; the output predicts the `vocab_size` codes only.

Decoding — iterative parallel decoding with confidence-based re-masking and an annealed choice temperature — is
the masked sampler's (`argen/sampling/samplers/masked.py`); `num_steps`, `mask_schedule` and
`choice_temperature` here are the model's sampling defaults.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..heads.categorical import CategoricalHead
from ..nn import Linear, Trunk, make_norm
from ..registry import register
from ..sampling.schedules import MASK_SCHEDULES, MaskSchedule, mask_ratio
from ..types import Conditioning, LossOutput
from .base import DiscreteGeneratorConfig, Generator


@dataclass(frozen=True, kw_only=True)
class MaskedConfig(DiscreteGeneratorConfig):
    """MaskGIT transformer. Defaults are MaskGIT's class-conditional model (24 layers, 768 wide, 16 heads, MLP
    3072, dropout 0.1) on a 16x16 grid of 1024 codes."""

    vocab_size: int = 1024
    dim: int = 768
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    norm: Literal["layer", "rms"] = "layer"
    norm_eps: float = 1e-6
    mlp: Literal["gelu", "gelu_tanh", "swiglu"] = "gelu"
    dropout: float = 0.1
    attn_dropout: float = 0.1
    drop_path: float = 0.0
    label_smoothing: float = 0.1
    train_schedule: MaskSchedule = "cosine"  # gamma of the training mask ratio
    init_std: float = 0.02
    # sampling defaults (the masked sampler's options start from these)
    num_steps: int = 8
    mask_schedule: MaskSchedule = "cosine"
    choice_temperature: float = 4.5

    def __post_init__(self):
        super().__post_init__()
        if len(self.scales) != 1:
            raise ValueError(f"a masked generator models one token grid; got scales {self.scales}")
        if self.dim < 1 or self.depth < 1 or self.num_heads < 1 or self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be a positive multiple of num_heads ({self.num_heads}), depth >= 1")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        for name in ("dropout", "attn_dropout", "drop_path", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("train_schedule", "mask_schedule"):
            if getattr(self, name) not in MASK_SCHEDULES:
                raise ValueError(f"{name} must be one of {', '.join(MASK_SCHEDULES)}; got {getattr(self, name)!r}")
        if not 1 <= self.num_steps <= self.num_tokens:
            raise ValueError(f"num_steps must be in [1, {self.num_tokens}] (the token count), got {self.num_steps}")
        if not (math.isfinite(self.choice_temperature) and self.choice_temperature >= 0):
            raise ValueError(f"choice_temperature must be >= 0 (MaskGIT uses 4.5), got {self.choice_temperature}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def cond_dim(self) -> int:
        return self.dim


@register("masked", MaskedConfig)
class MaskedGenerator(Generator):
    """MaskGIT: a bidirectional transformer that fills in masked token positions."""

    config: MaskedConfig

    def __init__(self, config: MaskedConfig):
        super().__init__(config)
        c = config
        self.tok_embeddings = nn.Embedding(c.vocab_size + 1, c.dim)  # + [MASK]
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_tokens, c.dim))
        self.embed_norm = make_norm(c.norm, c.dim, c.norm_eps)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.layers = Trunk(c.dim, c.depth, c.num_heads, round(c.dim * c.mlp_ratio), mlp=c.mlp, norm=c.norm,
                            norm_eps=c.norm_eps, qkv_bias=True, out_bias=True, attn_dropout=c.attn_dropout,
                            resid_dropout=c.dropout, ffn_dropout=c.dropout, drop_path=c.drop_path, rotary=False)
        self.norm = make_norm(c.norm, c.dim, c.norm_eps)
        self.output = Linear(c.dim, c.vocab_size)
        self.head = CategoricalHead(label_smoothing=c.label_smoothing)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT-style init: N(0, init_std) for linears, embeddings and positions, zero biases."""
        std = self.config.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.pos_embed, std=std)

    # ------------------------------------------------------------------ network

    def _check_input(self, tokens: Tensor) -> None:
        n = self.config.num_tokens
        if tokens.dim() != 2 or tokens.shape[1] != n or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a LongTensor (B, {n}) with [MASK] = {self.config.mask_id} where unknown; "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")

    def forward(self, tokens: Tensor, c: Conditioning) -> Tensor:
        """Logits (B, N, V) for every position of `tokens` (B, N), where id `mask_id` marks unknown positions."""
        self._check_input(tokens)
        self._check_conditioning(c, tokens.shape[0])
        P = c.prefix.shape[1]
        x = self.tok_embeddings(tokens) + self.pos_embed  # (B, N, C)
        x = torch.cat([c.prefix.to(x.dtype), x], dim=1)  # (B, P + N, C)
        if c.prefix_mask is None:
            mask = "full"
        else:  # padded prefix tokens (a short caption) are never attended to
            keys = torch.cat([c.prefix_mask, c.prefix_mask.new_ones(tokens.shape)], dim=1)  # (B, P + N)
            mask = keys[:, None, None, :]  # (B, 1, 1, P + N): broadcast over heads and queries
        x = self.layers(self.embed_dropout(self.embed_norm(x)), mask=mask)
        return self.output(self.norm(x[:, P:])).float()  # (B, N, V)

    def random_mask(self, batch_size: int, rng: torch.Generator | None, device: torch.device) -> Tensor:
        """Training masks (B, N) bool: per sample ceil(gamma(r) N) random positions, r ~ U(0, 1)."""
        n = self.config.num_tokens
        dev = rng.device if rng is not None else device
        r = torch.rand(batch_size, generator=rng, device=dev)
        counts = torch.tensor([max(1, math.ceil(mask_ratio(float(t), self.config.train_schedule) * n)) for t in r],
                              device=dev)
        ranks = torch.rand(batch_size, n, generator=rng, device=dev).argsort(dim=1).argsort(dim=1)  # random ranks
        return (ranks < counts[:, None]).to(device)

    def loss(self, tokens: Tensor, c: Conditioning, *, rng: torch.Generator | None = None,
             mask: Tensor | None = None) -> LossOutput:
        """Cross-entropy on the masked positions (drawn from `rng`, or the given `mask` (B, N) bool)."""
        self._check_tokens(tokens)
        if mask is None:
            mask = self.random_mask(tokens.shape[0], rng, tokens.device)
        elif mask.shape != tokens.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of the tokens' shape {tuple(tokens.shape)}, got "
                             f"{tuple(mask.shape)} {mask.dtype}")
        inputs = tokens.masked_fill(mask, self.config.mask_id)
        out = self.head.loss(self(inputs, c), tokens, mask)
        out.metrics["mask_ratio"] = mask.float().mean().detach()
        return out
