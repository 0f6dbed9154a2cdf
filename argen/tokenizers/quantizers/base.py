"""Quantizer contract and the pieces every quantizer shares.

Contract (tested for every registered kind in tests/tokenizers/test_quantizers.py):

    forward(z)  -> QuantOutput(z_q, ids, loss, stats)     z, z_q: (B, C, H, W) feature maps
    lookup(ids) -> z_q                                    in eval mode lookup(forward(z).ids) == forward(z).z_q

`ids` are int64: (B, H, W) for single-code quantizers (VQ, FSQ, LFQ, BSQ), (B, H, W, D) for residual VQ of
depth D, and (B, sum_k h_k * w_k) for the multi-scale quantizer (coarse -> fine, row-major within a scale).
`stats` always holds `usage` (fraction of codes hit by this batch), `perplexity` (exp of the entropy of the
batch's code histogram) and `usage_window` (fraction of codes hit during the last `usage_window` training
steps; NaN when the vocabulary is too large to track per code).

Distributed training: codebook state (usage counters here; EMA, k-means and restarts in codebook.py) is
all-reduced in training mode whenever `torch.distributed` is initialised, so every rank holds the same
state. Eval-mode forwards never communicate (evaluation may run on a single rank).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...config import Config
from ...types import QuantOutput, TokenLayout

# Per-code "last used" tracking costs one int64 per code; beyond this many codes (e.g. BSQ with 36 bits)
# only batch statistics are reported.
MAX_TRACKED_CODES = 1 << 20


@dataclass(frozen=True, kw_only=True)
class QuantizerConfig(Config):
    """Base of every quantizer config. `dim` is the number of input channels C of z (B, C, H, W)."""

    dim: int = 8
    # Training steps over which `stats["usage_window"]` counts a code as used.
    usage_window: int = 100

    def __post_init__(self):
        if self.dim < 1:
            raise ValueError(f"dim (input channels) must be >= 1, got {self.dim}")
        if self.usage_window < 1:
            raise ValueError(f"usage_window must be >= 1 training step, got {self.usage_window}")


# ----------------------------------------------------------------------------- distributed helpers

def distributed() -> bool:
    """True when a process group is up and there is more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(t: Tensor) -> Tensor:
    """In-place sum over ranks (no-op single-process)."""
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """In-place copy of rank `src`'s tensor to every rank (no-op single-process)."""
    if distributed():
        dist.broadcast(t, src=src)
    return t


# ----------------------------------------------------------------------------- statistics

def histogram_stats(counts: Tensor) -> tuple[Tensor, Tensor]:
    """(usage, perplexity) of code histograms (G, V), averaged over the G groups.

    Entropy as log n - sum(c log c) / n over the raw counts (no normalised copy).
    """
    counts = counts.float()
    n = counts.sum(-1).clamp_min(1)
    usage = torch.count_nonzero(counts, dim=-1).float() / counts.shape[-1]
    entropy = n.log() - (counts * counts.clamp_min(1).log()).sum(-1) / n  # xlogy is ~4x slower on CPU
    return usage.mean(), entropy.exp().mean()


def _stats_of_hits(hits: Tensor, codes: int) -> tuple[Tensor, Tensor]:
    """(usage, perplexity) from hits (G, N) = the batch count of each sample's own code.

    A code hit c times appears c times with value c, so sum 1/hits = distinct codes and
    mean log hits = sum_c (c/n) log c = log n - entropy.
    """
    n = hits.shape[-1]
    usage = hits.reciprocal().sum(-1).round() / codes
    entropy = math.log(max(n, 1)) - hits.log().mean(-1)
    return usage.mean(), entropy.exp().mean()


class Quantizer(nn.Module):
    """Base class: subclasses implement `vocab_size`, `forward` and `lookup`.

    `usage_groups` is the number of separately counted codebooks (RVQ with per-depth codebooks: depth).
    """

    config: QuantizerConfig

    def __init__(self, config: QuantizerConfig, usage_groups: int = 1):
        super().__init__()
        self.config = config
        self._usage_groups = usage_groups
        codes = self.codes_per_group
        tracked = codes <= MAX_TRACKED_CODES
        # Persistent so a resumed run restarts dead codes exactly as an uninterrupted one would.
        # Official checkpoints lack them: converters keep the freshly built values.
        self.register_buffer("usage_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_used", torch.full((usage_groups, codes if tracked else 0), -1, dtype=torch.long))

    # -- what the quantizer produces

    @property
    def vocab_size(self) -> int:
        """Number of distinct values one id can take."""
        raise NotImplementedError

    @property
    def codes_per_group(self) -> int:
        """Codes in one separately tracked codebook (the vocabulary unless a subclass splits it)."""
        return self.vocab_size

    @property
    def ids_per_position(self) -> int:
        """Ids per spatial position (residual depth for RVQ, 1 otherwise)."""
        return 1

    def token_layout(self, grid_hw: tuple[int, int]) -> TokenLayout:
        """The token layout of a (h, w) latent grid."""
        return TokenLayout(scales=(tuple(grid_hw),), vocab_size=self.vocab_size,
                           tokens_per_position=self.ids_per_position)

    def forward(self, z: Tensor) -> QuantOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def lookup(self, ids: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared helpers

    def _check_input(self, z: Tensor) -> None:
        if z.dim() != 4 or z.shape[1] != self.config.dim:
            raise ValueError(f"{type(self).__name__} expects z of shape (B, {self.config.dim}, H, W), got "
                             f"{tuple(z.shape)}; set the quantizer's dim to the encoder's output channels")

    @torch.no_grad()
    def _usage(self, ids: Tensor) -> dict[str, Tensor]:
        """Usage statistics of `ids` (G, N) per group; updates the running window in training mode.

        In training the histogram is summed over ranks first, so every rank logs and tracks the same numbers.
        """
        groups, codes = self._usage_groups, self.codes_per_group
        ids = ids.reshape(groups, -1)
        if codes <= MAX_TRACKED_CODES:
            if groups > 1:
                ids = ids + torch.arange(groups, device=ids.device).unsqueeze(1) * codes
            counts = torch.bincount(ids.flatten(), minlength=groups * codes)  # (G*V,)
            if self.training:
                self.usage_step += 1
            if self.training and distributed():  # global histogram: every rank tracks the same codes
                all_reduce_sum_(counts)
                self.last_used.masked_fill_(counts.view(groups, codes) > 0, int(self.usage_step))
                usage, perplexity = histogram_stats(counts.view(groups, codes))
            else:  # O(N) instead of O(V) passes; same numbers
                if self.training:
                    self.last_used.view(-1).index_fill_(0, ids.flatten(), int(self.usage_step))
                usage, perplexity = _stats_of_hits(counts[ids].float(), codes)
            # last_used is -1 for never-hit codes, so the threshold never drops below -1.
            threshold = max(int(self.usage_step) - self.config.usage_window, -1)
            window = (self.last_used > threshold).sum() / self.last_used.numel()
        else:  # huge vocabularies: count distinct ids of this batch only
            per_group = [torch.unique(g, return_counts=True)[1] for g in ids]
            usage = torch.stack([c.numel() / torch.tensor(float(codes)) for c in per_group]).mean()
            perplexity = torch.stack([histogram_stats(c)[1] for c in per_group]).mean()
            window = torch.tensor(float("nan"))
        dev = ids.device
        return {"usage": usage.to(dev), "perplexity": perplexity.to(dev), "usage_window": window.to(dev)}

    @torch.no_grad()
    def dead_codes(self, after: int, group: int = 0) -> Tensor:
        """Bool mask (V,) of codes not hit during the last `after` training steps (window-tracked only)."""
        # A never-hit code counts from step 0, so nothing is dead before `after` steps have run.
        return self.last_used[group].clamp_min(0) <= self.usage_step - after


def flatten_channels_last(z: Tensor) -> Tensor:
    """(B, C, H, W) -> (B*H*W, C), row-major over positions."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B*H*W, C)


def unflatten_channels_last(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """(B*H*W, C) -> (B, C, H, W) given (B, H, W)."""
    b, h, w = shape
    return x.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, C, H, W)


@torch.no_grad()
def restart_dead_codes(quantizer: "Quantizer", codebook, x: Tensor, after: int, seed: int, group: int = 0) -> Tensor:
    """Replace codes of `codebook` unused for `after` steps with random rows of x (N, d); returns how many.

    Shared by every codebook quantizer (vq, rvq, msvq). The seed mixes in the step and group so restarts are
    reproducible and identical on every rank; restarted codes get a fresh usage window."""
    dead = quantizer.dead_codes(after, group)
    n = codebook.restart_(dead, x, seed + 1_000_003 * int(quantizer.usage_step) + 7919 * group)
    if n:
        quantizer.last_used[group].masked_fill_(dead, int(quantizer.usage_step))
    return torch.tensor(float(n), device=x.device)


__all__ = ["QuantizerConfig", "Quantizer", "QuantOutput", "distributed", "all_reduce_sum_", "broadcast_",
           "histogram_stats", "flatten_channels_last", "unflatten_channels_last", "MAX_TRACKED_CODES",
           "restart_dead_codes"]
