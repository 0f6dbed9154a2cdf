"""Generator contract shared by every paradigm (pixel, raster, random-order, next-scale, masked).

A generator is a *network*: given tokens and a `Conditioning` (the conditioner's embeddings, never raw
labels) it computes logits, and it owns its head. It has no decoding logic: the sampling process of each
paradigm (orders, caches, steps, pruning) lives in its sampler (`argen.sampling.samplers`), driven by the one
loop `argen.sampling.generate`, as diffusers separates models from schedulers.

    logits = gen(tokens, c)                   # teacher-forced head input (B, L, V), layout order
    out = gen.loss(tokens, c, rng=rng)        # LossOutput: NLL in nats/token plus bits/token

`cond_dim` is the width its conditioner must produce. Next-scale generators read the tokenizer's quantizer;
`bind_tokenizer` shares that module with the tokenizer (one copy, never saved with the generator: see
`tokenizer_state_prefixes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config
from ..errors import ConfigError
from ..types import Conditioning, LossOutput, TokenLayout


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig(Config):
    """Base of every generator config: what tokens it models. `scales` are the token grids (h, w) (one entry
    for single-scale paradigms). Conditioning (classes, text) is the conditioner's config, not this one.
    Discrete generators add a `vocab_size` (DiscreteGeneratorConfig); continuous ones a token width."""

    scales: tuple[tuple[int, int], ...] = ((16, 16),)

    def __post_init__(self):
        if not self.scales or any(len(s) != 2 or s[0] < 1 or s[1] < 1 for s in self.scales):
            raise ValueError(f"scales must list token grids (h, w) with h, w >= 1, e.g. [[16, 16]]; got {self.scales}")

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.scales[-1])  # type: ignore[return-value]

    @property
    def num_tokens(self) -> int:
        return sum(h * w for h, w in self.scales)

    @property
    def layout(self) -> TokenLayout:
        raise NotImplementedError

    @property
    def cond_dim(self) -> int:
        """Width of the Conditioning this generator reads (its conditioner's `dim`)."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class DiscreteGeneratorConfig(GeneratorConfig):
    """A generator of token ids from a codebook of `vocab_size` codes."""

    vocab_size: int = 16384

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (the tokenizer's codebook size), got {self.vocab_size}")

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(scales=tuple(tuple(s) for s in self.scales), vocab_size=self.vocab_size)


class Generator(nn.Module):
    """Base class; subclasses implement `forward` and `loss` and own a `head`."""

    config: GeneratorConfig
    head: nn.Module

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config

    # ------------------------------------------------------------------ layout and pairing

    @property
    def layout(self) -> TokenLayout:
        return self.config.layout

    @property
    def cond_dim(self) -> int:
        return self.config.cond_dim

    def check_layout(self, layout: TokenLayout) -> None:
        """Raise ConfigError unless a tokenizer's layout is what this generator models."""
        mine = self.layout
        problems = []
        if tuple(map(tuple, layout.scales)) != tuple(map(tuple, mine.scales)):
            problems.append(f"token grids {list(map(list, layout.scales))} vs generator.scales {list(map(list, mine.scales))}")
        if layout.vocab_size != mine.vocab_size:
            problems.append(f"vocab size {layout.vocab_size} vs generator.vocab_size {mine.vocab_size}")
        if layout.latent_dim != mine.latent_dim:
            problems.append(f"latent dim {layout.latent_dim} vs generator {mine.latent_dim}")
        if layout.tokens_per_position != mine.tokens_per_position:
            problems.append(f"tokens per position {layout.tokens_per_position} vs {mine.tokens_per_position}")
        if problems:
            raise ConfigError("tokenizer and generator disagree: " + "; ".join(problems)
                              + ". Set the generator's scales / vocab_size / token width to the tokenizer's layout "
                              "(e.g. --set generator.vocab_size=...).")

    def check_conditioner(self, conditioner: nn.Module) -> None:
        """Raise ConfigError unless `conditioner` produces embeddings of this generator's width."""
        if conditioner.dim != self.cond_dim:
            raise ConfigError(f"the conditioner produces {conditioner.dim}-wide embeddings but the generator reads "
                              f"{self.cond_dim}; set conditioner.dim={self.cond_dim}")

    def bind_tokenizer(self, tokenizer: nn.Module) -> None:
        """Pair with a (trained) tokenizer (Pipeline, training). The default checks the layout; generators that
        build their inputs with the tokenizer's own weights (next-scale: codebook + Phi) share them here."""
        self.check_layout(tokenizer.layout)

    def tokenizer_state_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes that belong to the bound tokenizer (a pipeline saves them once, with it)."""
        return ()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.parameters() if p.is_floating_point()).dtype

    def _check_tokens(self, tokens: Tensor) -> None:
        """Refuse token tensors that are not (B, num_tokens) int64 in layout order."""
        n = self.config.num_tokens
        if tokens.dim() != 2 or tokens.shape[1] != n or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a LongTensor (B, {n}) for token grids {list(map(list, self.config.scales))}; "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")

    @staticmethod
    def _check_conditioning(c: Conditioning, rows: int) -> None:
        if not isinstance(c, Conditioning):
            raise TypeError(f"generators take a Conditioning (the conditioner's output), got {type(c).__name__}; "
                            "embed labels first: conditioner(conditioner.parse(labels))")
        if c.batch_size != rows:
            raise ValueError(f"the conditioning has {c.batch_size} rows but the tokens have {rows}")

    # ------------------------------------------------------------------ network

    def forward(self, tokens: Tensor, c: Conditioning) -> Tensor:
        """Teacher-forced head input (B, L, ...) in layout order for tokens (B, L, ...) given `c`."""
        raise NotImplementedError

    def loss(self, tokens: Tensor, c: Conditioning, *, rng: torch.Generator | None = None) -> LossOutput:
        """Training loss of `tokens` (layout order) given `c`; `rng` feeds any random choice (e.g. orders)."""
        raise NotImplementedError
