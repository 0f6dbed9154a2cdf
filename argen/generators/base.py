"""Generator contract shared by every paradigm (pixel, raster, random-order, masked, next-scale).

Training: `loss(tokens, cond) -> LossOutput` (NLL in nats/token plus bits/token). Sampling is a small state
machine driven by the one loop in `argen.sampling.generate`:

    state = gen.begin(cond, batch_size=B, opts=opts)   # cond has B rows, or 2B rows [cond; uncond] for CFG
    gen.randomize(state, rng)                          # per-run random choices (e.g. a decoding order)
    while not state.done:
        out = gen.predict(state)                       # head input for this step's positions, 2B rows if CFG
        tokens, scores = head.sample(head.guide(out, s) if CFG else out, opts, rng)
        gen.commit(state, tokens, scores)              # write the B sampled rows, advance the step
        gen.force(state, known_tokens, known_mask)     # editing: known positions keep their values
    tokens = gen.result(state)                         # (B, L) in the tokenizer's (layout) order

A paradigm differs only in its order, masks and which positions a step fills.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..conditioning.labels import null_like
from ..config import Config
from ..errors import ConfigError
from ..types import Cond, DecodeState, LossOutput, SampleOptions, TokenLayout


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig(Config):
    """Base of every generator config: what tokens it models and how it is conditioned.

    `scales` are the token grids (h, w) (one entry for single-scale paradigms); `num_classes` 0 means
    unconditional (every label is the null class); `class_dropout` is the CFG label-dropout rate.
    """

    vocab_size: int = 16384
    num_classes: int = 1000
    scales: tuple[tuple[int, int], ...] = ((16, 16),)
    class_dropout: float = 0.1

    def __post_init__(self):
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (the tokenizer's codebook size), got {self.vocab_size}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {self.num_classes}")
        if not self.scales or any(len(s) != 2 or s[0] < 1 or s[1] < 1 for s in self.scales):
            raise ValueError(f"scales must list token grids (h, w) with h, w >= 1, e.g. [[16, 16]]; got {self.scales}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1) (0.1 is usual for CFG), got {self.class_dropout}")

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.scales[-1])  # type: ignore[return-value]

    @property
    def num_tokens(self) -> int:
        return sum(h * w for h, w in self.scales)

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(scales=tuple(tuple(s) for s in self.scales), vocab_size=self.vocab_size)


class Generator(nn.Module):
    """Base class; subclasses implement `loss`, `begin`, `predict`, `commit` and own a `head`."""

    config: GeneratorConfig
    head: nn.Module

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config

    # ------------------------------------------------------------------ layout

    @property
    def layout(self) -> TokenLayout:
        return self.config.layout

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
                              + ". Set the generator's scales/vocab_size to the tokenizer's layout "
                              "(e.g. --set generator.vocab_size=...).")

    def bind_tokenizer(self, tokenizer: nn.Module) -> None:
        """Called when a (trained) tokenizer is paired with this generator (Pipeline, training). The default
        checks the layout; generators that build their inputs from token ids with the tokenizer's own
        weights (next-scale: codebook + Phi) copy them here."""
        self.check_layout(tokenizer.layout)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _check_tokens(self, tokens: Tensor) -> None:
        """Refuse token tensors that are not (B, num_tokens) int64 in layout order."""
        n = self.config.num_tokens
        if tokens.dim() != 2 or tokens.shape[1] != n or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a LongTensor (B, {n}) for token grids {list(map(list, self.config.scales))}; "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")

    @staticmethod
    def _check_rows(cond: Cond, batch_size: int) -> int:
        """Rows of `cond` at sampling: batch_size, or 2 * batch_size when CFG doubles it ([cond; uncond])."""
        rows = cond.batch_size
        if rows not in (batch_size, 2 * batch_size):
            raise ValueError(f"cond has {rows} rows; expected {batch_size} or {2 * batch_size} ([cond; uncond])")
        return rows

    # ------------------------------------------------------------------ training

    def loss(self, tokens: Tensor, cond: Cond, *, rng: torch.Generator | None = None) -> LossOutput:
        """Teacher-forced NLL of `tokens` (layout order) given `cond`; label dropout when training."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sampling state machine

    def null_cond(self, cond: Cond) -> Cond:
        """The unconditional counterpart of `cond` (the uncond half of CFG)."""
        return null_like(cond)

    def begin(self, cond: Cond, *, batch_size: int, opts: SampleOptions) -> DecodeState:
        """Start a run for `batch_size` samples; `cond` has batch_size rows, or 2*batch_size rows
        [cond; uncond] when guidance is on (the generator then runs every step on both halves)."""
        raise NotImplementedError

    def randomize(self, state: DecodeState, rng: torch.Generator) -> None:
        """Draw the run's own random choices (e.g. a random decoding order) from the sampling `rng`; the loop
        calls it once, right after `begin`. Default: nothing to draw."""

    def predict(self, state: DecodeState) -> Tensor:
        """Head input (e.g. logits (R, T, V)) for the T positions this step fills; R = rows of cond."""
        raise NotImplementedError

    def commit(self, state: DecodeState, tokens: Tensor, scores: Tensor) -> None:
        """Write the sampled tokens (B, T) of this step into the state and advance `state.step`."""
        raise NotImplementedError

    def force(self, state: DecodeState, tokens: Tensor, mask: Tensor) -> None:
        """Editing hook: positions where `mask` (B, L) is True take `tokens` (layout order) and count as
        known. The default suits paradigms whose state order is the layout order."""
        m = mask if tokens.dim() == mask.dim() else mask.unsqueeze(-1)
        state.tokens = torch.where(m, tokens, state.tokens)
        state.known |= mask

    def result(self, state: DecodeState) -> Tensor:
        """The finished tokens in layout order."""
        return state.tokens

    def progress(self, state: DecodeState) -> float:
        """Fraction of the output generated before the current step (drives CFG schedules)."""
        return state.step / max(state.num_steps, 1)


class GeneratorTask(nn.Module):
    """Training task for `argen.train.Trainer`: a batch `(tokens, labels)` from a token cache -> the generator's
    loss. CFG label dropout draws from the loop's generator (`ctx.rng`), so resumed runs replay exactly."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, batch, ctx) -> LossOutput:
        tokens, labels = batch
        return self.generator.loss(tokens, Cond(labels=labels.long()), rng=ctx.rng)

    def ema_module(self) -> nn.Module:
        return self.generator
