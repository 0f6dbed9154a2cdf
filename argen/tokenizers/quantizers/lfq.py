"""Lookup-free quantization (LFQ, MAGVIT-v2: Yu et al. 2023, https://arxiv.org/abs/2310.05737) and binary
spherical quantization (BSQ: Zhao et al. 2024, https://arxiv.org/abs/2406.07548).

Each of the d = `bits` channels is quantized to its sign, so the implicit codebook is {-s, +s}^d with 2^d codes
(LFQ: s = 1; BSQ: the input is first projected to the unit sphere and s = 1/sqrt(d), so codes are unit
vectors too). The id is the binary number of the positive channels, channel 0 most significant.

Training adds the MAGVIT-v2 entropy penalty on the soft assignment q(c|x) = softmax_c(-||x - c||^2 / T):
    entropy_loss = sample_weight * E_x[H(q(.|x))] - batch_weight * H(E_x[q(.|x)])
(confident per vector, diverse over the batch). Because the codes are a product set, q(.|x) factorises over
channels into Bernoullis with logit 4 s x_i / T, so the per-sample entropy is a sum of d binary entropies.
The batch term H(E_x[q]) does not factorise; `entropy_estimate="exact"` still avoids the (N, 2^d) matrix:
split the channels into halves A, B, so q(c|x) = q_A(c_A|x) q_B(c_B|x) and E_x[q] = Q_A^T Q_B / N, one
(2^{d/2} x N) @ (N x 2^{d/2}) matmul with memory O(N 2^{d/2} + 2^d). `"factorized"` uses the per-channel
upper bound sum_i H(E_x[q_i]) (BSQ's approximation), O(N d), for very large d.
Under DDP the batch distribution is averaged over ranks with a differentiable all-reduce.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import registry
from ...types import QuantOutput
from .base import Quantizer, QuantizerConfig, distributed, flatten_channels_last

# Exact batch entropy materialises the 2^bits distribution: 2^24 fp32 = 64 MiB.
MAX_EXACT_ENTROPY_BITS = 24


@dataclass(frozen=True, kw_only=True)
class LFQConfig(QuantizerConfig):
    dim: int = 14
    bits: int = 14  # vocabulary 2^bits
    commitment_weight: float = 0.25
    entropy_weight: float = 0.1  # weight of the whole entropy penalty
    sample_entropy_weight: float = 1.0
    batch_entropy_weight: float = 1.0  # "diversity gamma"
    inv_temperature: float = 100.0
    entropy_estimate: Literal["exact", "factorized"] = "exact"

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.bits <= 62:
            raise ValueError(f"bits must be in [1, 62] (vocabulary 2^bits with int64 ids), got {self.bits}")
        if self.entropy_estimate == "exact" and self.bits > MAX_EXACT_ENTROPY_BITS:
            raise ValueError(f"entropy_estimate='exact' needs bits <= {MAX_EXACT_ENTROPY_BITS} (2^bits batch "
                             f"distribution), got {self.bits}; use entropy_estimate='factorized'")
        if self.inv_temperature <= 0:
            raise ValueError(f"inv_temperature must be > 0, got {self.inv_temperature}")
        for name in ("commitment_weight", "entropy_weight", "sample_entropy_weight", "batch_entropy_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class BSQConfig(LFQConfig):
    """BSQ: LFQ on the unit sphere (inputs l2-normalised, codes +-1/sqrt(bits))."""


def binary_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(sigmoid(logits)), elementwise and stable for large |logits|."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))


def code_bits(num_bits: int, device: torch.device) -> Tensor:
    """(2^num_bits, num_bits) float {0, 1}: row c holds the bits of c, most significant first."""
    shifts = torch.arange(num_bits - 1, -1, -1, device=device)
    return ((torch.arange(2**num_bits, device=device).unsqueeze(1) >> shifts) & 1).float()


def half_code_probs(logits: Tensor) -> Tensor:
    """Per-vector probabilities (N, 2^k) of every code of k channels with Bernoulli logits (N, k).

    log q(c|x) = sum_i log sigmoid(-a_i) + sum_i c_i a_i for bits c_i (since log s(a) - log s(-a) = a).
    """
    bits = code_bits(logits.shape[1], logits.device).to(logits.dtype)  # (2^k, k)
    return torch.exp(F.logsigmoid(-logits).sum(1, keepdim=True) + logits @ bits.t())  # (N, 2^k)


def mean_code_distribution(logits: Tensor) -> Tensor:
    """E_x[q(.|x)] (2^d,) over the rows of logits (N, d), via two half-width code tables."""
    k = logits.shape[1] // 2
    hi, lo = half_code_probs(logits[:, : logits.shape[1] - k]), half_code_probs(logits[:, logits.shape[1] - k:])
    return (hi.t() @ lo).flatten() / logits.shape[0]  # (2^(d-k), 2^k) -> (2^d,), id = hi * 2^k + lo


def _global_mean(total: Tensor, count: int) -> Tensor:
    """Sum over ranks (differentiably) of `total`, divided by the global count."""
    if not distributed():
        return total / count
    from torch.distributed.nn.functional import all_reduce

    counts = torch.tensor(float(count), device=total.device)
    torch.distributed.all_reduce(counts)
    return all_reduce(total) / counts


@registry.register("lfq", LFQConfig)
class LookupFreeQuantizer(Quantizer):
    """LFQ. ids (B, H, W) int64 in [0, 2^bits)."""

    config: LFQConfig
    spherical = False

    def __init__(self, config: LFQConfig):
        super().__init__(config)
        d = config.bits
        # 1x1 convs = per-position linear maps, applied without leaving the (B, C, H, W) layout.
        self.proj_in = nn.Identity() if config.dim == d else nn.Conv2d(config.dim, d, 1)
        self.proj_out = nn.Identity() if config.dim == d else nn.Conv2d(d, config.dim, 1)
        self.register_buffer("bit_values", 2 ** torch.arange(d - 1, -1, -1, dtype=torch.long), persistent=False)

    @property
    def vocab_size(self) -> int:
        return 2**self.config.bits

    @property
    def code_scale(self) -> float:
        return 1.0 / math.sqrt(self.config.bits) if self.spherical else 1.0

    def forward(self, z: Tensor) -> QuantOutput:
        self._check_input(z)
        cfg = self.config
        x = self.proj_in(z).float()  # (B, d, H, W): channel-first, bits broadcast over H*W
        if self.spherical:
            x = F.normalize(x, dim=1)
        positive = x > 0
        s = self.code_scale
        bits = positive.to(x.dtype)
        q = bits * (2 * s) - s  # (B, d, H, W) in {-s, +s}
        ids = self._bits_to_ids(positive, bits)  # (B, H, W)
        commit = F.mse_loss(x, q) * cfg.commitment_weight
        z_q = x + (q - x).detach() if x.requires_grad else q  # straight-through
        z_q = self.proj_out(z_q.to(z.dtype))

        stats = self._usage(ids)
        if self.training:
            sample_h, batch_h = self._entropies(flatten_channels_last(x))
            entropy = cfg.sample_entropy_weight * sample_h - cfg.batch_entropy_weight * batch_h
            loss = commit + cfg.entropy_weight * entropy
        else:  # the penalty is a training regulariser; skip its cost when tokenizing
            sample_h = batch_h = torch.full((), float("nan"), device=z.device)
            loss = commit
        stats.update(commit_loss=commit.detach(), sample_entropy=sample_h.detach(), batch_entropy=batch_h.detach())
        return QuantOutput(z_q=z_q, ids=ids, loss=loss, stats=stats)  # loss stays fp32

    def _bits_to_ids(self, positive: Tensor, bits: Tensor) -> Tensor:
        """Binary number over the channels of bits (B, d, H, W), channel 0 most significant -> (B, H, W)."""
        weights = self.bit_values.view(-1, 1, 1)
        if self.config.bits <= 24:  # exact in fp32, and faster than int64 arithmetic
            return (bits * weights.to(bits.dtype)).sum(1).long()
        return (positive.long() * weights).sum(1)

    def _entropies(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean per-vector entropy, entropy of the batch-mean distribution) of q(c|x), in nats."""
        cfg = self.config
        with torch.autocast(device_type=x.device.type, enabled=False):  # fp16 entropies NaN; keep fp32
            logits = x.float() * (4.0 * self.code_scale * cfg.inv_temperature)  # (N, d)
            sample_h = binary_entropy(logits).sum(1).mean()
            if cfg.entropy_estimate == "exact":
                probs = _global_mean(mean_code_distribution(logits) * logits.shape[0], logits.shape[0])  # (2^d,)
                batch_h = -(probs * probs.clamp_min(1e-30).log()).sum()
            else:
                p_bit = _global_mean(torch.sigmoid(logits).sum(0), logits.shape[0])  # (d,)
                batch_h = binary_entropy(torch.logit(p_bit.clamp(1e-6, 1 - 1e-6))).sum()
        return sample_h, batch_h

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        """ids (...) -> codes (..., bits) with values +-s."""
        bits = (ids.unsqueeze(-1) // self.bit_values) % 2
        return (bits.float() * 2 - 1) * self.code_scale

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (B, H, W) -> z_q (B, C, H, W)."""
        codes = self.ids_to_codes(ids).permute(0, 3, 1, 2)  # (B, H, W, d) -> (B, d, H, W)
        p = next(self.proj_out.parameters(), None)
        return self.proj_out(codes if p is None else codes.to(p.dtype))


@registry.register("bsq", BSQConfig)
class BinarySphericalQuantizer(LookupFreeQuantizer):
    """BSQ. ids (B, H, W) int64 in [0, 2^bits)."""

    config: BSQConfig
    spherical = True
