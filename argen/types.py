"""Dataclasses that cross module boundaries. Fixed fields: no flag changes what is returned.

Shape glossary used across argen: B batch, L tokens, C channels, V vocab, S scales, H/W height/width.
Images are always (B, 3, H, W) float in [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from .config import Config

if TYPE_CHECKING:  # torch loads on first use, so the CLI can build its parser (and --help) without it
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


CfgSchedule = Literal["constant", "linear", "linear_scale", "interval"]
CFG_SCHEDULES: tuple[str, ...] = get_args(CfgSchedule)  # the one list (CLI choices, validation, docs)


def _rows(t: Any, start: int, end: int) -> Any:
    return None if t is None else t[start:end]


def _cat(a: Any, b: Any) -> Any:
    import torch

    return None if a is None else torch.cat([a, b])


@dataclass
class Cond:
    """Raw conditioning of a batch, before a conditioner embeds it: `labels` int64 (B,) class ids (-1 = no
    label); `text` embeddings (B, T, D) with `text_mask` (B, T) bool; `image` (B, 3, H, W). Which fields a
    model needs is its conditioner's business (`argen.conditioning`)."""

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

    def rows(self, start: int, end: int) -> "Cond":
        """Samples start..end-1."""
        return Cond(*(_rows(t, start, end) for t in (self.labels, self.text, self.text_mask, self.image)))

    def cat(self, other: "Cond") -> "Cond":
        """[self; other] along the batch (CFG's [cond; uncond] rows); fields absent in `self` stay absent."""
        return Cond(_cat(self.labels, other.labels), _cat(self.text, other.text),
                    _cat(self.text_mask, other.text_mask), _cat(self.image, other.image))


@dataclass
class Conditioning:
    """What a conditioner hands a generator, in the generator's width C: `prefix` tokens (B, P, C) (with
    `prefix_mask` (B, P) bool, True = a real token; None = all real) and one `vector` (B, C) for AdaLN or a
    start token. A generator uses the fields its paradigm needs (LlamaGen: the prefix; VAR: the vector)."""

    prefix: Tensor
    vector: Tensor
    prefix_mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.vector.shape[0]

    def rows(self, start: int, end: int) -> "Conditioning":
        return Conditioning(self.prefix[start:end], self.vector[start:end], _rows(self.prefix_mask, start, end))

    def repeat(self, n: int) -> "Conditioning":
        """Every row n times in a block (rows [c; c; ...]), e.g. several samples per prompt."""
        mask = None if self.prefix_mask is None else self.prefix_mask.repeat(n, 1)
        return Conditioning(self.prefix.repeat(n, 1, 1), self.vector.repeat(n, 1), mask)


@dataclass(frozen=True, kw_only=True)
class SampleOptions(Config):
    """Sampling knobs shared by every paradigm (one word means one thing). Paradigm-only knobs (decoding
    order, number of steps, pruning, ...) live in each sampler's own options (`argen.sampling.samplers`)."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = keep all
    top_p: float = 1.0  # 1.0 = keep all
    cfg: float = 1.0  # 1.0 = no guidance
    cfg_schedule: CfgSchedule = "constant"
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # fraction of steps where guidance is on ("interval")

    def __post_init__(self):
        finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
        if not finite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if 0 < self.temperature < 1e-6:
            raise ValueError(f"temperature {self.temperature} is too small to sample from (logits / T overflow); "
                             "use 0 for greedy decoding or a value >= 1e-6")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = keep all), got {self.top_k}")
        if not finite(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = keep all), got {self.top_p}")
        if not finite(self.cfg) or self.cfg < 0:
            raise ValueError(f"cfg must be a finite number >= 0 (1 = no guidance), got {self.cfg}")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)}; got {self.cfg_schedule!r}")
        if len(self.cfg_interval) != 2 or not all(finite(v) for v in self.cfg_interval):
            raise ValueError(f"cfg_interval must be two finite fractions (lo, hi); got {self.cfg_interval}")

    @property
    def guided(self) -> bool:
        """Whether sampling runs the [cond; uncond] rows (any cfg other than 1)."""
        return self.cfg != 1.0
