"""Dataclasses that cross module boundaries. Fixed fields: no flag changes what is returned.

Shape glossary used across argen: B batch, L tokens, C channels, V vocab, S scales, H/W height/width.
Images are always (B, 3, H, W) float in [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenLayout:
    """What a tokenizer produces and a generator consumes.

    `scales` lists the token grids (h, w); single-scale tokenizers have one entry, next-scale (VAR)
    tokenizers several, flattened coarse -> fine and row-major within a scale.
    Discrete tokens have `vocab_size`; continuous tokens have `latent_dim` channels per token.
    """

    scales: tuple[tuple[int, int], ...]
    vocab_size: int | None = None
    latent_dim: int | None = None
    # Values per token position for sub-token factorisations (e.g. pixel AR: 3 sub-pixels); 1 otherwise.
    tokens_per_position: int = 1

    def __post_init__(self):
        if not self.scales:
            raise ValueError("TokenLayout.scales must list at least one (h, w) grid")
        if (self.vocab_size is None) == (self.latent_dim is None):
            raise ValueError("TokenLayout needs exactly one of vocab_size (discrete) or latent_dim (continuous)")

    @property
    def discrete(self) -> bool:
        return self.vocab_size is not None

    @property
    def num_tokens(self) -> int:
        """Total tokens over all scales (and sub-tokens)."""
        return sum(h * w for h, w in self.scales) * self.tokens_per_position

    @property
    def grid(self) -> tuple[int, int]:
        """The finest token grid."""
        return self.scales[-1]


@dataclass
class QuantOutput:
    """Output of every quantizer. `z_q` has z's shape; `ids` is int64 (B, ...) ; `loss` a scalar."""

    z_q: Tensor
    ids: Tensor
    loss: Tensor
    stats: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class TokenizerOutput:
    """Output of Tokenizer.forward: reconstruction, the tokens, named losses (training) and stats."""

    recon: Tensor
    tokens: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class LossOutput:
    """What every training task returns: the scalar to minimise plus named metrics to log."""

    loss: Tensor
    metrics: dict[str, Tensor | float] = field(default_factory=dict)


@dataclass
class Cond:
    """Conditioning for a batch. `labels` int64 (B,) class ids; `text` embeddings (B, T, D) with
    `text_mask` (B, T) bool; `image` (B, 3, H, W) for image/control conditioning."""

    labels: Tensor | None = None
    text: Tensor | None = None
    text_mask: Tensor | None = None
    image: Tensor | None = None

    @property
    def batch_size(self) -> int:
        for t in (self.labels, self.text, self.image):
            if t is not None:
                return t.shape[0]
        raise ValueError("Cond is empty: give labels, text or image (use null labels for unconditional)")

    def to(self, device: torch.device | str) -> "Cond":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Cond(mv(self.labels), mv(self.text), mv(self.text_mask), mv(self.image))


@dataclass(frozen=True)
class SampleOptions:
    """Sampling knobs shared by every paradigm (one word means one thing)."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = keep all
    top_p: float = 1.0  # 1.0 = keep all
    cfg: float = 1.0  # 1.0 = no guidance
    cfg_schedule: Literal["constant", "linear", "linear_scale", "interval"] = "constant"
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # fraction of steps where guidance is on ("interval")
    num_steps: int | None = None  # paradigms with a choice of step count (masked); None = default
    gumbel: float = 0.0  # optional Gumbel smoothing strength (next-scale)
    prune: tuple[float, ...] = ()  # next-scale: fraction of tokens skipped at each of the last len(prune) scales

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = keep all), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = keep all), got {self.top_p}")
        if self.cfg < 0:
            raise ValueError(f"cfg must be >= 0 (1 = no guidance), got {self.cfg}")
        if any(not 0.0 <= r < 1.0 for r in self.prune):
            raise ValueError(f"prune ratios must be in [0, 1) (fraction of a scale's tokens skipped), got {self.prune}")


@dataclass
class DecodeState:
    """Mutable state of one generation run, owned by a generator's begin/predict/commit.

    `tokens` holds the sequence in the generator's token order (B, L) (or (B, L, D) continuous);
    `known` marks positions already fixed (by sampling or forced by editing); `step`/`num_steps`
    drive schedules; `cache` is generator-private (KV caches, orders, ...).
    """

    tokens: Tensor
    known: Tensor
    step: int
    num_steps: int
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.step >= self.num_steps
