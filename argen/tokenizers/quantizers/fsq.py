"""Finite scalar quantization (Mentzer et al. 2023, https://arxiv.org/abs/2309.15505).

Each of the d = len(levels) channels is bounded with tanh to L_i values and rounded (straight-through), so
the implicit codebook is the grid prod_i L_i; nothing is learned and there is no auxiliary loss. Channel i
takes the integer digit k_i in [0, L_i) and the id is the mixed-radix number sum_i k_i * prod_{j<i} L_j
(first channel least significant). Code values are (k_i - L_i // 2) / (L_i // 2), in [-1, 1].
`dim != len(levels)` adds 1x1-conv in/out projections.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ... import registry
from ...types import QuantOutput
from .base import Quantizer, QuantizerConfig


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


class _BoundRound(torch.autograd.Function):
    """Bound, round and scale in one op: (rounded, codes) with codes = round(b(x)) / half_width and
    b(x) = half_range tanh(x + shift) - offset. Straight-through: d codes / dx = b'(x) / half_width. Fusing it saves
    the autograd graph's intermediates (one saved tensor instead of four)."""

    @staticmethod
    def forward(ctx, x, shift, half_range, neg_offset, half_width):
        t = torch.tanh(x + shift)
        rounded = torch.addcmul(neg_offset, t, half_range).round_()
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(torch.addcmul(half_range, half_range, t.square_(), value=-1).div_(half_width))
        ctx.mark_non_differentiable(rounded)
        return rounded, rounded / half_width

    @staticmethod
    def backward(ctx, _grad_rounded, grad_codes):
        (slope,) = ctx.saved_tensors  # half_range (1 - t^2) / half_width
        return grad_codes * slope, None, None, None, None


@registry.register("fsq", FSQConfig)
class FiniteScalarQuantizer(Quantizer):
    """FSQ. ids (B, H, W) int64. Works channel-first: per-channel constants broadcast over H*W."""

    config: FSQConfig

    def __init__(self, config: FSQConfig):
        super().__init__(config)
        d = len(config.levels)
        # 1x1 convs = per-position linear maps, applied without leaving the (B, C, H, W) layout.
        self.proj_in = nn.Identity() if config.dim == d else nn.Conv2d(config.dim, d, 1)
        self.proj_out = nn.Identity() if config.dim == d else nn.Conv2d(d, config.dim, 1)
        levels = torch.tensor(config.levels, dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        # Bounding constants: channel i is squashed to (-half_i - offset_i, half_i - offset_i) so that rounding
        # yields L_i values (offset 1/2 for even L_i); shift makes 0 map to 0 before offsetting.
        half = (levels.double() - 1) * (1 + 1e-3) / 2
        offset = (levels % 2 == 0).double() * 0.5
        col = lambda t: t.float().view(-1, 1, 1)  # noqa: E731  (d,) -> (d, 1, 1) to broadcast over (B, d, H, W)
        # Constants, not state: rebuilt from the config, kept out of checkpoints.
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("half_range", col(half), persistent=False)
        self.register_buffer("neg_offset", col(-offset), persistent=False)
        self.register_buffer("shift", col(torch.atanh(offset / half)), persistent=False)
        self.register_buffer("half_width", col(levels // 2), persistent=False)
        self.register_buffer("digit_weight", col(basis), persistent=False)

    @property
    def vocab_size(self) -> int:
        return math.prod(self.config.levels)

    @property
    def _id_offset(self) -> int:
        """sum_i (L_i // 2) basis_i: the id of the all-lowest code shifted to zero."""
        return sum((lv // 2) * math.prod(self.config.levels[:i]) for i, lv in enumerate(self.config.levels))

    def forward(self, z: Tensor) -> QuantOutput:
        self._check_input(z)
        x = self.proj_in(z).float()  # (B, d, H, W)
        # rounded: integers in [-L_i // 2, (L_i - 1) // 2]; codes = rounded / (L_i // 2) in [-1, 1]
        rounded, codes = _BoundRound.apply(x, self.shift, self.half_range, self.neg_offset, self.half_width)
        # id = sum_i (rounded_i + L_i // 2) basis_i, mixed radix with channel 0 least significant
        if self.vocab_size < 2**24:  # exact in fp32
            ids = (rounded * self.digit_weight).sum(1).long() + self._id_offset  # (B, H, W)
        else:
            ids = (rounded.long() * self.basis.view(-1, 1, 1)).sum(1) + self._id_offset
        z_q = self.proj_out(codes.to(z.dtype))
        return QuantOutput(z_q=z_q, ids=ids, loss=torch.zeros((), device=z.device),
                           stats=self._usage(ids))

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        """ids (...) -> code values (..., d) in [-1, 1]."""
        digits = (ids.unsqueeze(-1) // self.basis) % self.levels  # (..., d)
        return (digits - self.levels // 2).float() / (self.levels // 2).float()

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (B, H, W) -> z_q (B, C, H, W)."""
        codes = self.ids_to_codes(ids).permute(0, 3, 1, 2)  # (B, H, W, d) -> (B, d, H, W)
        p = next(self.proj_out.parameters(), None)
        return self.proj_out(codes if p is None else codes.to(p.dtype))
