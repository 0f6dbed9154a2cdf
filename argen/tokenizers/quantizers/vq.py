"""Vector quantization (VQ-VAE, van den Oord et al. 2017, https://arxiv.org/abs/1711.00937).

Each position of z (B, C, H, W) is replaced by its nearest code of a (K, d) codebook. Options:
- `metric="cosine"`: l2-normalise inputs and codes before matching (Yu et al. 2021, ViT-VQGAN,
  https://arxiv.org/abs/2110.04627); with `codebook_dim=8` and K=16384 this is LlamaGen's tokenizer
  (Sun et al. 2024, https://arxiv.org/abs/2406.06525). `codebook_dim != dim` adds linear in/out projections.
- loss = beta * ||x - sg(q)||^2 (commitment) + ||sg(x) - q||^2 (codebook; dropped with `ema_decay > 0`,
  where the codebook follows EMA statistics instead of gradients).
- `kmeans_iters > 0`: k-means init on the first training batch; `dead_after > 0`: codes not hit for that many
  training steps are replaced by random vectors of the current batch. Both seeded by `seed`.
- Straight-through estimator: z_q = x + sg(q - x), so gradients reach z unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import registry
from ...types import QuantOutput
from .base import Quantizer, QuantizerConfig, flatten_channels_last, restart_dead_codes, unflatten_channels_last
from .codebook import Codebook


@dataclass(frozen=True, kw_only=True)
class VQConfig(QuantizerConfig):
    """Codebook options shared by VQ and residual VQ."""

    codebook_size: int = 1024
    codebook_dim: int | None = None  # None = dim (no projections)
    metric: Literal["euclidean", "cosine"] = "euclidean"
    beta: float = 0.25  # commitment weight
    ema_decay: float = 0.0  # 0 = codebook learned by gradient; e.g. 0.99 = EMA updates
    kmeans_iters: int = 0  # 0 = no k-means init
    dead_after: int = 0  # 0 = never restart dead codes
    chunk_size: int = 0  # rows per search chunk; 0 = automatic (1 MiB buffer single-threaded, 16 MiB per thread)
    seed: int = 0  # seeds k-means init and dead-code restarts

    def __post_init__(self):
        super().__post_init__()
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2 codes, got {self.codebook_size}")
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise ValueError(f"codebook_dim must be >= 1 (or None to use dim), got {self.codebook_dim}")
        if self.beta < 0:
            raise ValueError(f"beta (commitment weight) must be >= 0, got {self.beta}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = gradient-trained codebook), got {self.ema_decay}")
        for name in ("kmeans_iters", "dead_after", "chunk_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off/automatic), got {getattr(self, name)}")

    @property
    def code_dim(self) -> int:
        """Dimension the codes live in (codebook_dim, or dim when that is None)."""
        return self.codebook_dim or self.dim


def make_codebook(cfg: VQConfig) -> Codebook:
    return Codebook(cfg.codebook_size, cfg.code_dim, cosine=cfg.metric == "cosine", ema_decay=cfg.ema_decay,
                    kmeans_iters=cfg.kmeans_iters, chunk_size=cfg.chunk_size)


def make_projections(cfg: VQConfig) -> tuple[nn.Module, nn.Module]:
    """Linear dim -> code_dim and back (identities when they are equal)."""
    if cfg.code_dim == cfg.dim:
        return nn.Identity(), nn.Identity()
    return nn.Linear(cfg.dim, cfg.code_dim), nn.Linear(cfg.code_dim, cfg.dim)


def vq_losses(x: Tensor, q: Tensor, beta: float, codebook_by_gradient: bool) -> tuple[Tensor, Tensor]:
    """(commitment, codebook) losses between inputs x and their codes q (same shape)."""
    commit = F.mse_loss(x, q.detach()) * beta
    book = F.mse_loss(q, x.detach()) if codebook_by_gradient else torch.zeros((), device=x.device)
    return commit, book


@registry.register("vq", VQConfig)
class VectorQuantizer(Quantizer):
    """Nearest-code quantizer. ids (B, H, W) int64."""

    config: VQConfig

    def __init__(self, config: VQConfig):
        super().__init__(config)
        self.proj_in, self.proj_out = make_projections(config)
        self.codebook = make_codebook(config)

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    def _prepare(self, x: Tensor) -> Tensor:
        x = self.proj_in(x)
        return F.normalize(x, dim=-1) if self.config.metric == "cosine" else x

    def forward(self, z: Tensor) -> QuantOutput:
        self._check_input(z)
        cfg = self.config
        b, _, h, w = z.shape
        x = self._prepare(flatten_channels_last(z))  # (N, d), N = B*H*W
        if self.training:
            self.codebook.maybe_kmeans_init_(x.detach(), cfg.seed)
        ids = self.codebook.search(x.detach())  # (N,)
        q = self.codebook.embed(ids).to(x.dtype)
        commit, book = vq_losses(x, q, cfg.beta, cfg.ema_decay == 0)
        z_q = self.proj_out(x + (q - x).detach())  # straight-through
        if self.training and cfg.ema_decay > 0:
            self.codebook.ema_update_(x.detach(), ids)
        stats = self._usage(ids)
        do_restart = self.training and cfg.dead_after > 0
        stats["restarted"] = self._restart_dead(x.detach()) if do_restart else torch.zeros((), device=z.device)
        stats.update(commit_loss=commit.detach(), codebook_loss=book.detach())
        return QuantOutput(z_q=unflatten_channels_last(z_q, (b, h, w)).to(z.dtype), ids=ids.view(b, h, w),
                           loss=commit + book, stats=stats)

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (B, H, W) -> z_q (B, C, H, W)."""
        b, h, w = ids.shape
        q = self.proj_out(self.codebook.embed(ids.reshape(-1)))  # (N, C)
        return unflatten_channels_last(q, (b, h, w))

    def _restart_dead(self, x: Tensor, group: int = 0, codebook: Codebook | None = None) -> Tensor:
        return restart_dead_codes(self, codebook or self.codebook, x, self.config.dead_after, self.config.seed, group)
