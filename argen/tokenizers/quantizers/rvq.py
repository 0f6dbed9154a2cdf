"""Residual vector quantization (Zeghidour et al. 2021, SoundStream, https://arxiv.org/abs/2107.03312;
Lee et al. 2022, RQ-VAE, https://arxiv.org/abs/2203.01941).

Depth D: code d quantizes what codes 1..d-1 left over, r_d = x - sum_{j<d} q_j, and z_q = sum_d q_d.
Codebooks are per depth or one shared by all depths (`shared_codebook`, RQ-VAE's choice). Every codebook
option of VQ (metric, EMA, k-means init, dead-code restart, chunked search) applies at each depth.
loss = mean over depths of the VQ losses between r_d and q_d. ids (B, H, W, D) int64, coarse depth first.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ... import registry
from ...types import QuantOutput
from .base import flatten_channels_last, unflatten_channels_last
from .vq import VectorQuantizer, VQConfig, make_codebook, make_projections, vq_losses


@dataclass(frozen=True, kw_only=True)
class RVQConfig(VQConfig):
    depth: int = 4
    shared_codebook: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.depth < 1:
            raise ValueError(f"depth (codes per position) must be >= 1, got {self.depth}")
        if self.metric != "euclidean":
            raise ValueError("residual VQ subtracts codes from residuals, which unit-norm (cosine) codes cannot "
                             "do; use metric='euclidean'")


@registry.register("rvq", RVQConfig)
class ResidualVectorQuantizer(VectorQuantizer):
    """Residual VQ of depth D. ids (B, H, W, D) int64."""

    config: RVQConfig

    def __init__(self, config: RVQConfig):
        super(VectorQuantizer, self).__init__(config, usage_groups=1 if config.shared_codebook else config.depth)
        self.proj_in, self.proj_out = make_projections(config)
        n_books = 1 if config.shared_codebook else config.depth
        self.codebooks = nn.ModuleList(make_codebook(config) for _ in range(n_books))

    @property
    def ids_per_position(self) -> int:
        return self.config.depth

    def _book(self, d: int):
        return self.codebooks[0 if self.config.shared_codebook else d]

    def forward(self, z: Tensor) -> QuantOutput:
        self._check_input(z)
        cfg = self.config
        b, _, h, w = z.shape
        x = self._prepare(flatten_channels_last(z))  # (N, d)
        residual, total = x, torch.zeros_like(x)
        ids, commit, book = [], x.new_zeros(()), x.new_zeros(())
        restart_inputs = []
        for d in range(cfg.depth):
            cb = self._book(d)
            r = residual.detach()
            if self.training and (d == 0 or not cfg.shared_codebook):
                cb.maybe_kmeans_init_(r, cfg.seed + d)
            idx = cb.search(r)  # (N,)
            q = cb.embed(idx).to(x.dtype)
            c, k = vq_losses(residual, q, cfg.beta, cfg.ema_decay == 0)
            commit, book = commit + c / cfg.depth, book + k / cfg.depth
            if self.training and cfg.ema_decay > 0:
                cb.ema_update_(r, idx)
            residual = residual - q.detach()
            total = total + q
            ids.append(idx)
            restart_inputs.append(r)
        ids_nd = torch.stack(ids, dim=1)  # (N, D)
        # Straight-through over the whole stack; codebook gradients come from the per-depth losses.
        z_q = self.proj_out(x + (total - x).detach())
        stats = self._usage(ids_nd.t())  # groups: one per codebook (shared: all depths pooled)
        restarted = torch.zeros((), device=z.device)
        if self.training and cfg.dead_after > 0:
            for g, cb in enumerate(self.codebooks):
                pool = restart_inputs[g] if not cfg.shared_codebook else torch.cat(restart_inputs)
                restarted = restarted + self._restart_dead(pool, group=g, codebook=cb)
        stats.update(restarted=restarted, commit_loss=commit.detach(), codebook_loss=book.detach())
        return QuantOutput(z_q=unflatten_channels_last(z_q, (b, h, w)).to(z.dtype), ids=ids_nd.view(b, h, w, -1),
                           loss=commit + book, stats=stats)

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (B, H, W, D) -> z_q (B, C, H, W)."""
        b, h, w, depth = ids.shape
        flat = ids.reshape(-1, depth)  # (N, D)
        q = sum(self._book(d).embed(flat[:, d]) for d in range(depth))
        return unflatten_channels_last(self.proj_out(q), (b, h, w))
