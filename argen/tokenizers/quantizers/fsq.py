"""Finite scalar quantization (Mentzer et al. 2023, https://arxiv.org/abs/2309.15505).

Each of the d = len(levels) channels is bounded with tanh to L_i values and rounded (straight-through), so
the implicit codebook is the grid prod_i L_i; nothing is learned and there is no auxiliary loss. Channel i
takes the integer digit k_i in [0, L_i) and the id is the mixed-radix number sum_i k_i * prod_{j<i} L_j
(first channel least significant). Code values are (k_i - L_i // 2) / (L_i // 2), in [-1, 1].
`dim != len(levels)` adds linear in/out projections.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ... import registry
from ...types import QuantOutput
from .base import Quantizer, QuantizerConfig, flatten_channels_last, unflatten_channels_last


@dataclass(frozen=True, kw_only=True)
class FSQConfig(QuantizerConfig):
    dim: int = 6
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)

    def __post_init__(self):
        super().__post_init__()
        if not self.levels or any(lv < 2 for lv in self.levels):
            raise ValueError(f"levels must list >= 2 values per channel, e.g. (8, 8, 8, 5, 5, 5); got {self.levels}")
        if math.prod(self.levels) >= 2**62:
            raise ValueError(f"prod(levels) = {math.prod(self.levels)} does not fit int64 ids; use fewer or smaller levels")


@registry.register("fsq", FSQConfig)
class FiniteScalarQuantizer(Quantizer):
    """FSQ. ids (B, H, W) int64."""

    config: FSQConfig

    def __init__(self, config: FSQConfig):
        super().__init__(config)
        d = len(config.levels)
        self.proj_in = nn.Identity() if config.dim == d else nn.Linear(config.dim, d)
        self.proj_out = nn.Identity() if config.dim == d else nn.Linear(d, config.dim)
        levels = torch.tensor(config.levels, dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        # Constants, not state: rebuilt from the config, kept out of checkpoints.
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    @property
    def vocab_size(self) -> int:
        return math.prod(self.config.levels)

    def _bound(self, x: Tensor) -> Tensor:
        """Squash each channel to (-L/2, L/2) so rounding yields L values (offset by 1/2 for even L)."""
        lv = self.levels.to(x.dtype)
        half = (lv - 1) * (1 + 1e-3) / 2
        offset = (self.levels % 2 == 0).to(x.dtype) * 0.5
        shift = torch.atanh(offset / half)
        return torch.tanh(x + shift) * half - offset

    def forward(self, z: Tensor) -> QuantOutput:
        self._check_input(z)
        b, _, h, w = z.shape
        x = self.proj_in(flatten_channels_last(z)).float()  # (N, d)
        bounded = self._bound(x)
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through rounding
        half_width = (self.levels // 2).to(x.dtype)
        codes = rounded / half_width  # (N, d) in [-1, 1]
        digits = (rounded.detach().round().long() + self.levels // 2)  # (N, d) in [0, L_i)
        ids = (digits * self.basis).sum(-1)  # (N,)
        z_q = self.proj_out(codes.to(z.dtype))
        return QuantOutput(z_q=unflatten_channels_last(z_q, (b, h, w)), ids=ids.view(b, h, w),
                           loss=torch.zeros((), device=z.device, dtype=z.dtype), stats=self._usage(ids))

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        """ids (...) -> code values (..., d) in [-1, 1]."""
        digits = (ids.unsqueeze(-1) // self.basis) % self.levels  # (..., d)
        return (digits - self.levels // 2).float() / (self.levels // 2).float()

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (B, H, W) -> z_q (B, C, H, W)."""
        b, h, w = ids.shape
        codes = self.ids_to_codes(ids.reshape(-1))  # (N, d)
        p = next(self.proj_out.parameters(), None)
        return unflatten_channels_last(self.proj_out(codes.to(p.dtype) if p is not None else codes), (b, h, w))
