"""Finite scalar quantization (Mentzer et al. 2023, https://arxiv.org/abs/2309.15505).

Each of the d = len(levels) channels is bounded with tanh to L_i values and rounded (straight-through), so
the implicit codebook is the grid prod_i L_i; nothing is learned and there is no auxiliary loss. Channel i
takes the integer digit k_i in [0, L_i) and the id is the mixed-radix number sum_i k_i * prod_{j<i} L_j
(first channel least significant). `dim != len(levels)` adds 1x1-conv in/out projections.

Two opt-in options (the `fsq-tiny` preset uses both; the defaults are the paper's FSQ):

- `symmetric`: the paper's layout puts even L's codes at (k - L/2) / (L/2), one more level below zero than
  above (L = 4: -1, -1/2, 0, 1/2), so a zero-centred latent needs |x| 2.5x larger to reach the lowest level
  than the highest. The symmetry-preserving layout (Parker et al. 2024, "Scaling Transformers for Low-Bitrate
  High-Quality Speech Coding", https://arxiv.org/abs/2411.19842, section 3.2; vector-quantize-pytorch's
  `preserve_symmetry`) spaces the codes 2k / (L - 1) - 1 evenly over [-1, 1] (L = 4: -1, -1/3, 1/3, 1) with
  decision boundaries symmetric about 0. For odd L both layouts are the same.
- `actnorm`: a per-channel scale and bias before the bound, initialised from the first training batch so every
  channel has zero mean and unit variance there, then trained like any parameter (Glow's actnorm, Kingma &
  Dhariwal 2018, https://arxiv.org/abs/1807.03039, section 3.1). FSQ's grid is fixed, so the encoder's output
  scale decides how much of it is used: a freshly initialised conv encoder gives std ~0.1, which tanh maps to
  the central levels only (a 4^4 grid without it: ~8% used at init, 50-60% after 60 CPU-s of training).
  This is the FSQ analogue of initialising a VQ codebook from the first batch (k-means).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ... import registry
from ...types import QuantOutput
from .base import Quantizer, QuantizerConfig, all_reduce_sum_


@dataclass(frozen=True, kw_only=True)
class FSQConfig(QuantizerConfig):
    dim: int = 6
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
    # Even levels spaced symmetrically about 0 (see the module docstring); False = the paper's layout.
    symmetric: bool = False
    # Data-dependent per-channel scale/bias before the bound (Glow's actnorm; see the module docstring).
    actnorm: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not self.levels or any(lv < 2 for lv in self.levels):
            raise ValueError(f"levels must list >= 2 values per channel, e.g. (8, 8, 8, 5, 5, 5); got {self.levels}")
        if math.prod(self.levels) >= 2**62:
            raise ValueError(f"prod(levels) = {math.prod(self.levels)} does not fit int64 ids; use fewer or smaller levels")


class _BoundRound(torch.autograd.Function):
    """Bound, round and scale in one op: (digits, codes) with digits = round(half_range tanh(x + shift) + center)
    in [0, L) and codes = digits * step - 1 in [-1, 1]. Straight-through: d codes / dx = half_range step (1 - t^2).

    tanh(u) = 2 sigmoid(2u) - 1, and sigmoid is ~3x faster than tanh on CPU (vectorised; tanh is not here), so
    the op runs on s = sigmoid(2 (x + shift)): digits = round(2 half_range s + center - half_range) and
    1 - t^2 = 4 s (1 - s). Fusing keeps one saved tensor (the slope, computed in s's buffer) instead of four."""

    @staticmethod
    def forward(ctx, x, two_shift, two_half, low, step):
        s = torch.add(two_shift, x, alpha=2).sigmoid_()  # (B, d, H, W)
        # mul + add_ rather than addcmul: addcmul with broadcast (d, 1, 1) operands is ~2x slower on CPU
        digits = torch.mul(s, two_half).add_(low).round_()
        codes = torch.mul(digits, step).sub_(1)
        if ctx.needs_input_grad[0]:
            # slope = half_range step (1 - t^2) = 2 two_half step s (1 - s), in place: no extra buffer
            ctx.save_for_backward(s.addcmul_(s, s, value=-1).mul_(2 * two_half * step))
        ctx.mark_non_differentiable(digits)
        return digits, codes

    @staticmethod
    def backward(ctx, _grad_digits, grad_codes):
        (slope,) = ctx.saved_tensors
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
        if config.actnorm:
            self.norm_scale = nn.Parameter(torch.ones(d))
            self.norm_bias = nn.Parameter(torch.zeros(d))
            # Persistent: a loaded or resumed model must not re-initialise from its next batch.
            self.register_buffer("norm_initialized", torch.zeros((), dtype=torch.bool))
        levels = torch.tensor(config.levels, dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        lv = levels.double()
        if config.symmetric:  # digit = round((L-1)/2 tanh(x) + (L-1)/2); code = 2 digit / (L-1) - 1
            half, shift, center, step = (lv - 1) / 2, torch.zeros(d, dtype=torch.double), (lv - 1) / 2, 2 / (lv - 1)
        else:
            # The paper: channel i is squashed to (-half_i - offset_i, half_i - offset_i) so that rounding yields
            # L_i values (offset 1/2 for even L_i; the 1e-3 lets the outer levels be reached); shift makes 0 map
            # to 0 before offsetting. digit = that + L // 2; code = (digit - L // 2) / (L // 2).
            half = (lv - 1) * (1 + 1e-3) / 2
            offset = (levels % 2 == 0).double() * 0.5
            shift, center, step = torch.atanh(offset / half), (levels // 2) - offset, 1 / (levels // 2).double()
        col = lambda t: t.float().view(-1, 1, 1)  # noqa: E731  (d,) -> (d, 1, 1) to broadcast over (B, d, H, W)
        # Constants, not state: rebuilt from the config, kept out of checkpoints.
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("code_step", step.float(), persistent=False)
        # In sigmoid form (see _BoundRound): 2 shift, 2 half_range and the digit at tanh = -1.
        self.register_buffer("two_shift", col(2 * shift), persistent=False)
        self.register_buffer("two_half", col(2 * half), persistent=False)
        self.register_buffer("low", col(center - half), persistent=False)
        self.register_buffer("step", col(step), persistent=False)
        self.register_buffer("digit_weight", basis.float().view(1, -1), persistent=False)  # (1, d)

    @property
    def vocab_size(self) -> int:
        return math.prod(self.config.levels)

    @torch.no_grad()
    def _init_actnorm(self, x: Tensor) -> None:
        """Scale and bias so that x's channels have zero mean and unit variance (pooled over ranks)."""
        x = x.transpose(0, 1).reshape(x.shape[1], -1).double()  # (d, B*H*W)
        moments = all_reduce_sum_(torch.stack([x.new_tensor(float(x.shape[1])).expand(x.shape[0]),
                                               x.sum(1), x.square().sum(1)]))  # (3, d): count, sum, sum of squares
        n, s, ss = moments
        mean = s / n
        std = (ss / n - mean.square()).clamp_min(0).sqrt()
        scale = torch.where(std > 1e-5, 1 / std, torch.ones_like(std))  # a constant channel keeps scale 1
        self.norm_scale.copy_(scale)
        self.norm_bias.copy_(-mean * scale)
        self.norm_initialized.fill_(True)

    def forward(self, z: Tensor) -> QuantOutput:
        self._check_input(z)
        x = self.proj_in(z).float()  # (B, d, H, W)
        if self.config.actnorm:
            if self.training and not bool(self.norm_initialized):
                self._init_actnorm(x)
            x = x * self.norm_scale.view(-1, 1, 1) + self.norm_bias.view(-1, 1, 1)
        # digits: integers in [0, L_i); codes in [-1, 1]
        digits, codes = _BoundRound.apply(x, self.two_shift, self.two_half, self.low, self.step)
        # id = sum_i digit_i basis_i, mixed radix with channel 0 least significant
        if self.vocab_size < 2**24:  # exact in fp32; one batched (1, d) x (d, H*W) product, no (B, d, H, W) temporary
            ids = torch.matmul(self.digit_weight, digits.flatten(2)).view(digits.shape[0], *digits.shape[2:]).long()
        else:
            ids = (digits.long() * self.basis.view(-1, 1, 1)).sum(1)
        del digits  # free it before the usage statistics allocate theirs (lower peak memory)
        z_q = self.proj_out(codes.to(z.dtype))
        return QuantOutput(z_q=z_q, ids=ids, loss=torch.zeros((), device=z.device),
                           stats=self._usage(ids))

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        """ids (...) -> code values (..., d) in [-1, 1]."""
        digits = (ids.unsqueeze(-1) // self.basis) % self.levels  # (..., d)
        return (digits.float() * self.code_step).sub_(1)  # digit * step - 1, as in forward

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (B, H, W) -> z_q (B, C, H, W)."""
        codes = self.ids_to_codes(ids).permute(0, 3, 1, 2)  # (B, H, W, d) -> (B, d, H, W)
        p = next(self.proj_out.parameters(), None)
        return self.proj_out(codes if p is None else codes.to(p.dtype))
