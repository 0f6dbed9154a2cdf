"""The conditioner interface: raw conditioning (class labels today; text and images next) -> embeddings a
generator consumes, and the one definition of "unconditional" that classifier-free guidance uses.

    cond = conditioner.parse([3, "sneaker", -1])     # user input -> Cond (checked)
    c = conditioner(cond)                             # Conditioning(prefix (B, P, C), vector (B, C))
    uncond = conditioner.null(batch_size, device)     # the unconditional Cond (CFG's second half)
    conditioner.is_null(cond)                         # (B,) bool: which rows are unconditional
    cond = conditioner.drop(cond, p, rng)             # training: each row made unconditional with prob. p

A conditioner is a component of its own (saved in a pipeline's `conditioner/` folder): generators never see
labels or captions, only `Conditioning`, so a new kind of condition is one new conditioner and no generator
change. Its width `dim` is the generator's width (`Generator.cond_dim`), checked where the two meet.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..types import Cond, Conditioning


@dataclass(frozen=True, kw_only=True)
class ConditionerConfig(Config):
    """Base of every conditioner config: the embedding width and the CFG training dropout rate."""

    dim: int = 768
    dropout: float = 0.1  # fraction of training rows made unconditional (label/caption dropout for CFG)

    def __post_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be a positive width (the generator's), got {self.dim}")
        if not (isinstance(self.dropout, (int, float)) and math.isfinite(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1) (0.1 is usual for CFG), got {self.dropout}")


class Conditioner(nn.Module):
    """Base class. Subclasses implement `parse`, `null`, `drop` and `forward`."""

    config: ConditionerConfig

    def __init__(self, config: ConditionerConfig):
        super().__init__()
        self.config = config

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def parse(self, values: Any, device: torch.device | str | None = None) -> Cond:
        """User input (a Cond, or what this kind accepts: class ids/names, prompts) -> a checked Cond."""
        raise NotImplementedError

    def null(self, batch_size: int, device: torch.device | str | None = None) -> Cond:
        """The unconditional Cond for `batch_size` rows: the one definition of "no condition"."""
        raise NotImplementedError

    def drop(self, cond: Cond, prob: float, rng: torch.Generator | None = None) -> Cond:
        """Training: make each row unconditional with probability `prob` (draws from `rng` only)."""
        raise NotImplementedError

    def is_null(self, cond: Cond) -> torch.Tensor:
        """(B,) bool: which rows of `cond` are unconditional (what `null` produces)."""
        raise NotImplementedError

    def forward(self, cond: Cond) -> Conditioning:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Facts for a user interface (the web page, `argen sample --help` text): kind and accepted values."""
        return {"kind": type(self.config).kind}
