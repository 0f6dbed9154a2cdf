"""Next-scale prediction: VAR (Tian et al., "Visual Autoregressive Modeling", https://arxiv.org/abs/2404.02905).

The image is a pyramid of token maps r_1 .. r_S from the multi-scale residual quantizer (`msvq`), flattened
coarse -> fine. One transformer step predicts a *whole scale* at once:

    position block 0     : condition vector (+ pos_start)                 -> logits of scale 1
    position block k > 0 : word_embed(AreaDown(f_hat_{k-1}, scale k))      -> logits of scale k+1

where f_hat_{k-1} = sum_{j<k} phi_j(BicubicUp(e[r_j])) is the running reconstruction of the quantizer (its
one shared function builds these inputs for training and, scale by scale, for sampling). Every position
adds a level embedding (its scale index) and a learned absolute position embedding. Attention is
block-causal: a token sees its own scale and all coarser ones. The trunk's AdaLN blocks (6 chunks in VAR's
order gamma1, gamma2, scale1, scale2, shift1, shift2; or one shared projection plus per-block offsets as in
VAR-d36) read the conditioner's vector; attention has q/v-only biases and optionally l2-normalised q/k with a
learned per-head temperature, and a tanh-GELU MLP. The head is an AdaLN (scale, shift) LayerNorm and a linear
layer to the vocabulary.

The inputs are built from token ids with the tokenizer's quantizer (codebook + phi convs). `self.quantizer`
is a frozen module of that config; `bind_tokenizer(tokenizer)` makes it *the tokenizer's own* quantizer (one
copy in memory, saved once with the tokenizer in a pipeline). Sampling one scale per step (KV cache, VAR's
Gumbel smoothing, FastVAR-style pruning) is the next-scale sampler's (`argen/sampling/samplers/next_scale.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import registry
from ..errors import ConfigError
from ..heads.categorical import CategoricalHead
from ..nn import NO_CACHE, AdaLNModulation, KVCache, LayerNorm, Linear, NoCache, Trunk, modulate
from ..nn.attention import AttnMask
from ..registry import register
from ..tokenizers.quantizers.base import QuantizerConfig
from ..tokenizers.quantizers.msvq import VAR_SCALES_256, MSVQConfig
from ..types import Conditioning, LossOutput
from .base import DiscreteGeneratorConfig, Generator


def _default_quantizer() -> QuantizerConfig:
    return MSVQConfig(dim=32, codebook_size=4096, scales=VAR_SCALES_256)


@dataclass(frozen=True, kw_only=True)
class NextScaleConfig(DiscreteGeneratorConfig):
    """VAR transformer. `dim`/`num_heads` None follow VAR's size rule (64 * depth, depth heads);
    `drop_path` None is VAR's 0.1 * depth / 24. Defaults are VAR-d16 on 256px (310M parameters)."""

    vocab_size: int = 4096
    scales: tuple[tuple[int, int], ...] = VAR_SCALES_256
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)
    depth: int = 16
    dim: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    qk_norm: bool = True  # VAR's attn_l2_norm
    shared_adaln: bool = False  # VAR-d36's shared AdaLN
    drop_path: float | None = None
    attn_dropout: float = 0.0
    dropout: float = 0.0
    init_std: float | None = None  # None: sqrt(1 / (3 * dim))
    init_head: float = 0.02
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5

    def __post_init__(self):
        super().__post_init__()
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.width < 1 or self.heads < 1 or self.width % self.heads:
            raise ValueError(f"dim ({self.width}) must be a positive multiple of num_heads ({self.heads})")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0 (VAR uses 4), got {self.mlp_ratio}")
        for name in ("attn_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.path_drop < 1.0:
            raise ValueError(f"drop_path must be in [0, 1) or null (VAR's 0.1 * depth / 24), got {self.drop_path}")
        if self.quantizer.kind != "msvq":
            raise ValueError(f"quantizer must be the multi-scale quantizer (kind msvq), got {self.quantizer.kind!r}")
        q = self.quantizer
        if tuple(map(tuple, q.scales)) != tuple(map(tuple, self.scales)):
            raise ValueError(f"scales {list(map(list, self.scales))} differ from quantizer.scales "
                             f"{list(map(list, q.scales))}; set both to the tokenizer's scales")
        if q.codebook_size != self.vocab_size:
            raise ValueError(f"vocab_size {self.vocab_size} differs from quantizer.codebook_size {q.codebook_size}; "
                             "set both to the tokenizer's codebook size")

    @property
    def width(self) -> int:
        return self.dim if self.dim is not None else 64 * self.depth

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_heads is not None else self.depth

    @property
    def cond_dim(self) -> int:
        return self.width

    @property
    def path_drop(self) -> float:
        return self.drop_path if self.drop_path is not None else 0.1 * self.depth / 24

    @property
    def first_len(self) -> int:
        """Tokens of the first scale (the condition vector is repeated over them)."""
        h, w = self.scales[0]
        return h * w

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """(begin, end) of every scale in the flat token sequence."""
        out, cur = [], 0
        for h, w in self.scales:
            out.append((cur, cur + h * w))
            cur += h * w
        return out


@register("next-scale", NextScaleConfig)
class NextScaleGenerator(Generator):
    """VAR: block-causal transformer over a token pyramid."""

    config: NextScaleConfig

    def __init__(self, config: NextScaleConfig):
        super().__init__(config)
        c = config
        C, L = c.width, c.num_tokens
        self.quantizer = registry.build(c.quantizer)
        self.quantizer.requires_grad_(False)  # the tokenizer's, once bound (see bind_tokenizer)
        self.word_embed = nn.Linear(c.quantizer.dim, C)
        self.pos_start = nn.Parameter(torch.zeros(1, c.first_len, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, L, C))  # one learned vector per (scale, position)
        self.level_embed = nn.Embedding(len(c.scales), C)
        if c.shared_adaln:
            self.shared_ada_lin = AdaLNModulation(C, C, 6)
        self.blocks = Trunk(C, c.depth, c.heads, round(C * c.mlp_ratio), mlp="gelu_tanh", norm="layer",
                            norm_eps=c.norm_eps, qkv_bias="qv", out_bias=True, qk_norm="l2" if c.qk_norm else "none",
                            attn_dropout=c.attn_dropout, resid_dropout=c.dropout, ffn_dropout=c.dropout,
                            drop_path=c.path_drop, adaln="shared" if c.shared_adaln else "block", cond_dim=C,
                            softmax_scale=None if c.qk_norm else 0.25 / math.sqrt(C // c.heads),  # VAR's, no l2
                            rotary=False)
        self.head_norm = LayerNorm(C, c.norm_eps, affine=False)
        self.head_ada_lin = AdaLNModulation(C, C, 2)
        self.output = Linear(C, c.vocab_size)  # nn.Linear that may use prepacked weights while sampling
        self.head = CategoricalHead()
        levels = torch.cat([torch.full((h * w,), k) for k, (h, w) in enumerate(c.scales)])  # (L,)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("block_mask", levels[None, :] <= levels[:, None], persistent=False)  # (L, L) may attend
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """VAR's init: truncated normal std sqrt(1/(3C)) for linears/embeddings, zero biases, small head,
        residual projections / sqrt(2 depth), AdaLN gates x init_adaln_gamma and scales/shifts x init_adaln."""
        c = self.config
        C = c.width
        std = c.init_std if c.init_std is not None else math.sqrt(1 / (3 * C))
        for name, m in self.named_modules():
            if name.startswith("quantizer"):
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.pos_start, self.pos_embed):
            nn.init.trunc_normal_(p, std=std)
        with torch.no_grad():
            self.output.weight.mul_(c.init_head)
            self.head_ada_lin[1].weight.mul_(c.init_adaln)
            for b in self.blocks:
                b.attention.wo.weight.div_(math.sqrt(2 * c.depth))
                b.feed_forward.fc2.weight.div_(math.sqrt(2 * c.depth))
                if c.qk_norm:
                    b.attention.qk_scale.fill_(math.log(4.0))
                b.attention.q_bias.zero_()
                b.attention.v_bias.zero_()
                if c.shared_adaln:
                    gss = torch.randn_like(b.ada_gss) / math.sqrt(C)
                    gss[:, :, 2:] *= c.init_adaln
                    gss[:, :, :2] *= c.init_adaln_gamma
                    b.ada_gss.copy_(gss)
                else:
                    w = b.ada_lin[1].weight  # rows: gamma1, gamma2 | scale1, scale2, shift1, shift2
                    w[2 * C:].mul_(c.init_adaln)
                    w[:2 * C].mul_(c.init_adaln_gamma)

    # ------------------------------------------------------------------ tokenizer link

    def bind_tokenizer(self, tokenizer: nn.Module) -> None:
        """Share the trained tokenizer's quantizer (codebook, phi): after this, `self.quantizer` is that module."""
        self.check_layout(tokenizer.layout)
        q = getattr(tokenizer, "quantizer", None)
        if q is None or type(q) is not type(self.quantizer) or q.config != self.quantizer.config:
            got = None if q is None else q.config
            raise ConfigError(f"the next-scale generator needs a tokenizer with quantizer {self.quantizer.config}; "
                              f"got {got}. Set generator.quantizer to the tokenizer's quantizer config.")
        self.quantizer = q

    def tokenizer_state_prefixes(self) -> tuple[str, ...]:
        return ("quantizer.",)

    # ------------------------------------------------------------------ pieces the next-scale sampler drives

    def modulations(self, cond_vec: Tensor) -> list[tuple[Tensor, ...]]:
        """AdaLN vectors of every block and the head for condition vectors (R, C): [6 x (R, 1, C)] * depth +
        [2 x ...]. They depend on the condition only, so sampling computes them once per run."""
        mod = torch.stack(self.shared_ada_lin(cond_vec), dim=2) if self.config.shared_adaln else cond_vec  # (R,1,6,C)
        return self.blocks.modulations(mod) + [self.head_ada_lin(cond_vec)]

    def run_blocks(self, x: Tensor, mods: list[tuple[Tensor, ...]], mask: AttnMask,
                   cache: KVCache | NoCache = NO_CACHE) -> Tensor:
        """Hidden states (R, T, C) of the trunk over x with precomputed modulations."""
        return self.blocks(x, mask=mask, cache=cache, modulations=mods)

    def head_logits(self, x: Tensor, mods: list[tuple[Tensor, ...]]) -> Tensor:
        """AdaLN head + output projection: logits (R, T, V) in fp32."""
        scale, shift = mods[-1]  # 2 x (R, 1, C)
        return self.output(modulate(self.head_norm(x), scale, shift)).float()

    def embed_scale(self, k: int, cond_vec: Tensor | None = None, feats: Tensor | None = None) -> Tensor:
        """Input tokens of scale k: (R, first_len, C) from condition vectors at k = 0, else (B, h_k w_k, C) from
        the quantizer features (B, h_k w_k, Cq) of the scales before."""
        a, b = self.config.bounds[k]
        lvl_pos = self.level_embed.weight[k] + self.pos_embed[:, a:b]  # (1, T, C)
        if k == 0:
            return cond_vec.unsqueeze(1) + self.pos_start + lvl_pos  # (R, first_len, C)
        return self.word_embed(feats) + lvl_pos

    # ------------------------------------------------------------------ network

    def forward(self, tokens: Tensor, c: Conditioning) -> Tensor:
        """Teacher-forced logits (B, L, V) for tokens (B, L)."""
        self._check_tokens(tokens)
        self._check_conditioning(c, tokens.shape[0])
        cond_vec = c.vector.to(self.pos_embed.dtype)  # (B, C)
        feats = self.quantizer.build_next_scale_inputs(tokens).to(cond_vec.dtype)  # (B, L - first_len, Cq)
        sos = cond_vec.unsqueeze(1) + self.pos_start  # (B, first_len, C)
        x = torch.cat([sos, self.word_embed(feats)], dim=1)  # (B, L, C)
        x = x + self.level_embed(self.levels) + self.pos_embed
        mods = self.modulations(cond_vec)
        return self.head_logits(self.run_blocks(x, mods, self.block_mask), mods)

    def loss(self, tokens: Tensor, c: Conditioning, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE over all L tokens (VAR weights every token 1/L, so the finest scale dominates);
        metrics add `nll_scale{k}` per scale."""
        logits = self(tokens, c)
        out = self.head.loss(logits, tokens)
        with torch.no_grad():
            nll = F.cross_entropy(logits.detach().reshape(-1, logits.shape[-1]), tokens.reshape(-1),
                                  reduction="none").view_as(tokens)  # (B, L)
            for k, (a, b) in enumerate(self.config.bounds):
                out.metrics[f"nll_scale{k}"] = nll[:, a:b].mean()
        return out
