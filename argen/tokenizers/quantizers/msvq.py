"""Multi-scale residual VQ of VAR (Tian et al. 2024, "Visual Autoregressive Modeling: Scalable Image
Generation via Next-Scale Prediction", https://arxiv.org/abs/2404.02905), with scales as (h, w) pairs.

Quantization of f (B, C, H, W), (H, W) = the last scale: r <- f, f_hat <- 0; for scale k = 1..S:
    ids_k   = nearest code of AreaDown(r, h_k x w_k)        (no resize at the last scale)
    h_k     = Phi_k(BicubicUp(e[ids_k], H x W))              (no resize at the last scale)
    f_hat  += h_k;  r -= h_k
Phi(h) = (1 - rho) h + rho conv3x3(h) with rho = `phi_ratio` (VAR's quant_resi, 0.5). `phi_sharing` is VAR's
share_quant_resi: 1 = one conv for all scales, 0 = one per scale, n > 1 = n convs and scale k uses the conv
whose tick in linspace(m, 1 - m, n) is nearest k/(S-1), with m = 1/(3n) for n = 4 and 1/(2n) otherwise
(10 scales, n = 4: 0,0,1,1,1,2,2,3,3,3).
loss = (1/S) sum_k [beta ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2] with the running f_hat_k; the output
is the straight-through f_hat + f - sg(f). `metric="cosine"` matches l2-normalised residuals and codes (VAR's
using_znorm) but still adds the raw code vectors.

ids are (B, L), L = sum_k h_k w_k, coarse -> fine and row-major within a scale. The next-scale generator uses
the same functions for training and sampling: `build_next_scale_inputs(ids)` (teacher forcing),
`embed_scale` + `next_scale_step` (one scale at a time) and `ids_to_fhat` (= `lookup`, for decoding).

Parameter names map one-to-one onto VAR's `quantize.*` keys: `embedding.weight` (V, C) <- `embedding.weight`;
`phi.{i}.{weight,bias}` <- `quant_resi.qresi_ls.{i}` (partially shared), `quant_resi.qresi` (i = 0, shared)
or `quant_resi.{i}` (per scale). VAR's `ema_vocab_hit_SV` buffer (usage logging only) has no counterpart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import registry
from ...types import QuantOutput, TokenLayout
from .base import Quantizer, QuantizerConfig, flatten_channels_last, restart_dead_codes
from .codebook import Codebook, nearest

# VAR's patch_nums, written once: 256 px (10 scales, 680 tokens) and 512 px (VAR-d36, 2240 tokens).
VAR_SCALES_256 = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (8, 8), (10, 10), (13, 13), (16, 16))
VAR_SCALES_512 = ((1, 1), (2, 2), (3, 3), (4, 4), (6, 6), (9, 9), (13, 13), (18, 18), (24, 24), (32, 32))


@dataclass(frozen=True, kw_only=True)
class MSVQConfig(QuantizerConfig):
    dim: int = 32
    codebook_size: int = 4096
    scales: tuple[tuple[int, int], ...] = VAR_SCALES_256  # (h, w) coarse -> fine; the last is the latent grid
    beta: float = 0.25
    metric: Literal["euclidean", "cosine"] = "euclidean"
    phi_sharing: int = 4  # VAR share_quant_resi: 0 = per scale, 1 = shared, n > 1 = n partially shared
    phi_ratio: float = 0.5  # VAR quant_resi; 0 = no Phi convs
    chunk_size: int = 0  # rows per search chunk; 0 = automatic
    dead_after: int = 0  # > 0: restart codes unused for that many training steps from random residuals (not in VAR)
    seed: int = 0  # seeds the restarts

    def __post_init__(self):
        super().__post_init__()
        if self.dead_after < 0:
            raise ValueError(f"dead_after must be >= 0 (0 = never restart dead codes), got {self.dead_after}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2 codes, got {self.codebook_size}")
        if not self.scales:
            raise ValueError("scales must list at least one (h, w) grid, e.g. ((1, 1), (2, 2), (4, 4))")
        H, W = self.scales[-1]
        for h, w in self.scales:
            if not (1 <= h <= H and 1 <= w <= W):
                raise ValueError(f"scale ({h}, {w}) must be positive and no larger than the last scale ({H}, {W}); "
                                 "list scales coarse -> fine")
        if self.phi_sharing < 0:
            raise ValueError(f"phi_sharing must be 0 (per scale), 1 (shared) or n > 1 (partially shared), got {self.phi_sharing}")
        if not 0.0 <= self.phi_ratio <= 1.0:
            raise ValueError(f"phi_ratio must be in [0, 1] (VAR uses 0.5), got {self.phi_ratio}")
        if self.beta < 0:
            raise ValueError(f"beta (commitment weight) must be >= 0, got {self.beta}")
        if self.chunk_size < 0:
            raise ValueError(f"chunk_size must be >= 0 (0 = automatic), got {self.chunk_size}")

    @property
    def num_phi(self) -> int:
        if self.phi_ratio == 0:
            return 0
        return len(self.scales) if self.phi_sharing == 0 else self.phi_sharing

    @property
    def phi_indices(self) -> tuple[int, ...]:
        """Which Phi conv each scale uses (VAR: the tick nearest k/(S-1), ticks = linspace(m, 1 - m, n))."""
        n, s = self.num_phi, len(self.scales)
        if n == 0:
            return (-1,) * s
        # VAR's ticks: the 1/(3n) margin for n == 4 (its default), 1/(2n) otherwise.
        margin = 1 / 3 / n if n == 4 else 1 / 2 / n
        ticks = np.linspace(margin, 1 - margin, n)
        return tuple(int(np.argmin(np.abs(ticks - (k / (s - 1) if s > 1 else 0.0)))) for k in range(s))

    @property
    def num_tokens(self) -> int:
        return sum(h * w for h, w in self.scales)


class Phi(nn.Conv2d):
    """VAR's residual refinement: (1 - ratio) h + ratio conv3x3(h)."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, h: Tensor) -> Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


@registry.register("msvq", MSVQConfig)
class MultiScaleVectorQuantizer(Quantizer):
    """VAR's multi-scale residual quantizer. ids (B, L) int64, L = sum_k h_k w_k."""

    config: MSVQConfig

    def __init__(self, config: MSVQConfig):
        super().__init__(config)
        self.embedding = Codebook(config.codebook_size, config.dim, chunk_size=config.chunk_size)
        self.phi = nn.ModuleList(Phi(config.dim, config.phi_ratio) for _ in range(config.num_phi))
        self._phi_index = config.phi_indices

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def scales(self) -> tuple[tuple[int, int], ...]:
        return self.config.scales

    def token_layout(self, grid_hw: tuple[int, int] | None = None) -> TokenLayout:
        if grid_hw is not None and tuple(grid_hw) != tuple(self.scales[-1]):
            raise ValueError(f"this multi-scale quantizer's last scale is {self.scales[-1]}, not the latent grid "
                             f"{tuple(grid_hw)}; set scales so the last one equals the encoder's output grid")
        return TokenLayout(scales=self.scales, vocab_size=self.vocab_size)

    # ------------------------------------------------------------------ pieces shared by all paths

    def _apply_phi(self, h: Tensor, k: int) -> Tensor:
        i = self._phi_index[k]
        return h if i < 0 else self.phi[i](h)

    def _upsample(self, h: Tensor, k: int) -> Tensor:
        """Scale-k feature map -> the full grid (bicubic), except at the last scale."""
        return h if k == len(self.scales) - 1 else F.interpolate(h, size=self.scales[-1], mode="bicubic")

    def _search(self, r: Tensor) -> Tensor:
        """Nearest code ids (N,) of rows r (N, C) (cosine: both sides l2-normalised)."""
        w, chunk = self.embedding.weight, self.embedding.chunk_rows()
        if self.config.metric == "cosine":
            return nearest(F.normalize(r, dim=-1), F.normalize(w.detach(), dim=-1), True, chunk)
        return nearest(r, w.detach(), False, chunk)

    # ------------------------------------------------------------------ quantization

    def forward(self, z: Tensor) -> QuantOutput:
        self._check_input(z)
        b, c, H, W = z.shape
        if (H, W) != tuple(self.scales[-1]):
            raise ValueError(f"z has grid {(H, W)} but the last scale is {self.scales[-1]}; the encoder's output "
                             "grid must equal the last scale")
        num_scales = len(self.scales)
        restart = self.training and self.config.dead_after > 0
        with torch.autocast(device_type=z.device.type, enabled=False):
            f = z.float()
            f_detached = f.detach()
            rest = f_detached
            f_hat = torch.zeros_like(f_detached)
            loss = f.new_zeros(())
            ids, residuals = [], []
            for k, (h, w) in enumerate(self.scales):
                last = k == num_scales - 1
                r = rest if last else F.interpolate(rest, size=(h, w), mode="area")
                flat = flatten_channels_last(r)  # (B*h*w, C)
                if restart:
                    residuals.append(flat)  # candidates for restarted codes
                idx = self._search(flat)  # (B*h*w,)
                ids.append(idx.view(b, h * w))
                h_k = self._apply_phi(self._upsample(self.embed_scale(idx.view(b, h, w)), k), k)
                f_hat = f_hat + h_k
                rest = rest - h_k.detach()
                loss = loss + self.config.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_detached)
            loss = loss / num_scales
            z_q = f_hat.detach() - f_detached + f  # straight-through: value f_hat, gradient to f
        ids_bl = torch.cat(ids, dim=1)  # (B, L) coarse -> fine
        stats = self._usage(ids_bl)
        stats["restarted"] = (restart_dead_codes(self, self.embedding, torch.cat(residuals), self.config.dead_after,
                                                 self.config.seed) if restart else z.new_zeros((), dtype=torch.float32))
        return QuantOutput(z_q=z_q.to(z.dtype), ids=ids_bl, loss=loss, stats=stats)

    # ------------------------------------------------------------------ ids <-> features (decode, generator I/O)

    def split_ids(self, ids: Tensor) -> list[Tensor]:
        """(B, L) -> per-scale ids [(B, h_k, w_k)], coarse -> fine."""
        if ids.shape[1] != self.config.num_tokens:
            raise ValueError(f"expected ids of shape (B, {self.config.num_tokens}) for scales {self.scales}, "
                             f"got {tuple(ids.shape)}")
        sizes = [h * w for h, w in self.scales]
        return [part.view(ids.shape[0], h, w) for part, (h, w) in zip(ids.split(sizes, dim=1), self.scales)]

    @staticmethod
    def flatten_ids(per_scale: list[Tensor]) -> Tensor:
        """[(B, h_k, w_k)] -> (B, L), row-major within each scale."""
        return torch.cat([t.reshape(t.shape[0], -1) for t in per_scale], dim=1)

    def embed_scale(self, ids_k: Tensor) -> Tensor:
        """Code vectors of one scale: ids (B, h, w) -> (B, C, h, w)."""
        return self.embedding.weight[ids_k].permute(0, 3, 1, 2)  # (B, h, w, C) -> (B, C, h, w)

    def next_scale_step(self, f_hat: Tensor | None, h_k: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Add scale k's code vectors h_k (B, C, h_k, w_k) to f_hat (B, C, H, W) (None = zeros).

        Returns (new f_hat, input for scale k+1 = AreaDown(f_hat, h_{k+1} x w_{k+1})); at the last scale the
        second value is the new f_hat itself. h_k may be any mixture of code vectors (e.g. VAR's
        Gumbel-smoothed embeddings), not only `embed_scale(ids)`. f_hat is not modified in place.
        """
        update = self._apply_phi(self._upsample(h_k, k), k)
        f_hat = update if f_hat is None else f_hat + update
        if k == len(self.scales) - 1:
            return f_hat, f_hat
        return f_hat, F.interpolate(f_hat, size=self.scales[k + 1], mode="area")

    def build_next_scale_inputs(self, ids: Tensor) -> Tensor:
        """Teacher-forcing inputs from ground-truth ids (B, L): (B, L - h_1 w_1, C).

        Row block k holds AreaDown(f_hat after scales 1..k, scale k+1), flattened row-major: exactly what
        sampling feeds the generator after it has produced scales 1..k.
        """
        per_scale = self.split_ids(ids)
        f_hat, inputs = None, []
        for k in range(len(self.scales) - 1):
            f_hat, nxt = self.next_scale_step(f_hat, self.embed_scale(per_scale[k]), k)
            inputs.append(nxt.flatten(2).transpose(1, 2))  # (B, C, h, w) -> (B, h*w, C)
        if not inputs:
            return self.embedding.weight.new_zeros(ids.shape[0], 0, self.config.dim)
        return torch.cat(inputs, dim=1)

    def ids_to_fhat(self, ids: Tensor) -> Tensor:
        """ids (B, L) -> f_hat (B, C, H, W) = sum_k Phi_k(BicubicUp(e[ids_k]))."""
        f_hat = None
        for k, ids_k in enumerate(self.split_ids(ids)):
            f_hat, _ = self.next_scale_step(f_hat, self.embed_scale(ids_k), k)
        return f_hat

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (B, L) -> z_q (B, C, H, W) (same as ids_to_fhat)."""
        return self.ids_to_fhat(ids)
