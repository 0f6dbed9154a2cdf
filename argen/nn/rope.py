"""Rotary position embeddings (RoFormer, https://arxiv.org/abs/2104.09864), 1-D and LlamaGen's 2-D form.

Tables are (cos, sin) pairs of shape (L, head_dim/2), one row per sequence position, computed once in fp32.
Rotation pairs are *adjacent* elements (x[2i], x[2i+1]) — the interleaved gpt-fast/LlamaGen layout, not the
rotate-half layout of HF Llama.

2-D (LlamaGen, https://arxiv.org/abs/2406.06525): head_dim is split in halves; the first head_dim/4 pairs
rotate by the token's row, the last head_dim/4 pairs by its column, both with the 1-D ladder
base^(-2i/(head_dim/2)). Since the rotation of q at p and k at p' only depends on p - p' per axis, q.k is
invariant to shifting both tokens by the same (dr, dc) (tested).

Prefix tokens (class / text embeddings) have no grid position. `prefix_mode` decides their rows:
  "identity": cos=1, sin=0 -> no rotation (argen's default);
  "zero":     cos=sin=0    -> q and k of prefix tokens become zero (LlamaGen's table does this; keep it
              only to reproduce official checkpoints exactly — the prefix then contributes only values).
Rows can be gathered with any index tensor (B, T), so random-order generation rotates each token by the
grid position it actually occupies.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

PrefixMode = Literal["identity", "zero"]


def _ladder(num: int, denom: int, base: float) -> Tensor:
    """base^(-2i/denom) for i < num, in fp32."""
    return 1.0 / (base ** (torch.arange(0, 2 * num, 2)[:num].float() / denom))


def rope_1d(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (L, head_dim/2), for integer positions (L,)."""
    if head_dim % 2:
        raise ValueError(f"1-D RoPE needs an even head_dim, got {head_dim}")
    angles = positions.float()[:, None] * _ladder(head_dim // 2, head_dim, base)[None]  # (L, D/2)
    return torch.cos(angles), torch.sin(angles)


def rope_2d(rows: Tensor, cols: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (L, head_dim/2): first half of the pairs rotate by `rows`, second half by `cols`."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4 (two axes of rotation pairs), got {head_dim}")
    half = head_dim // 2
    freqs = _ladder(half // 2, half, base)  # (D/4,)
    angles = torch.cat([rows.float()[:, None] * freqs, cols.float()[:, None] * freqs], dim=-1)  # (L, D/2)
    return torch.cos(angles), torch.sin(angles)


def grid_positions(height: int, width: int) -> tuple[Tensor, Tensor]:
    """Row and column of each token of an (h, w) grid in raster order, each (h*w,)."""
    idx = torch.arange(height * width)
    return idx // width, idx % width


def with_prefix(table: tuple[Tensor, Tensor], num_prefix: int, mode: PrefixMode = "identity") -> tuple[Tensor, Tensor]:
    """Prepend `num_prefix` rows for conditioning tokens (see the module docstring for `mode`)."""
    cos, sin = table
    if mode == "identity":
        pre_cos = torch.ones(num_prefix, cos.shape[1])
    elif mode == "zero":
        pre_cos = torch.zeros(num_prefix, cos.shape[1])
    else:
        raise ValueError(f"unknown prefix rope mode {mode!r}; choose 'identity' or 'zero'")
    pre_cos = pre_cos.to(cos.device)
    return torch.cat([pre_cos, cos]), torch.cat([torch.zeros_like(pre_cos), sin])


def grid_rope_table(height: int, width: int, head_dim: int, *, base: float = 10000.0, num_prefix: int = 0,
                    prefix_mode: PrefixMode = "identity", kind: Literal["2d", "1d"] = "2d") -> tuple[Tensor, Tensor]:
    """Table for a prefix followed by an (h, w) grid in raster order: (num_prefix + h*w, head_dim/2) each.

    kind "1d" numbers the grid tokens 0..h*w-1 (sequence RoPE); "2d" uses (row, col).
    """
    if kind == "2d":
        table = rope_2d(*grid_positions(height, width), head_dim, base)
    elif kind == "1d":
        table = rope_1d(torch.arange(height * width), head_dim, base)
    else:
        raise ValueError(f"unknown rope kind {kind!r}; choose '2d' or '1d'")
    return with_prefix(table, num_prefix, prefix_mode) if num_prefix else table


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent pairs of x (B, H, L, D) by tables (L, D/2) or per-sample (B, L, D/2), in fp32."""
    if cos.dim() == 3:  # per-sample positions: broadcast over heads
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, D/2)
    xf = x.float().unflatten(-1, (-1, 2))  # (B, H, L, D/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)  # (B, H, L, D/2, 2)
    return out.flatten(-2).type_as(x)


class GridRope(nn.Module):
    """RoPE rows for P conditioning (prefix) tokens followed by the tokens of an (h, w) grid in raster order.

    The grid's table is computed once (non-persistent buffers); the prefix length is known only at run time
    (one class token, a caption of T tokens), so `table(P)` prepends its P rows per call (decoders call it
    once per run and slice views per step). `repeat` gives every grid position that many consecutive rows
    (pixel AR: the three sub-pixels of a pixel share its position)."""

    def __init__(self, grid: tuple[int, int], head_dim: int, *, base: float = 10000.0,
                 kind: Literal["2d", "1d"] = "2d", prefix_mode: PrefixMode = "identity", repeat: int = 1):
        super().__init__()
        if prefix_mode not in ("identity", "zero"):
            raise ValueError(f"unknown prefix rope mode {prefix_mode!r}; choose 'identity' or 'zero'")
        cos, sin = grid_rope_table(grid[0], grid[1], head_dim, base=base, kind=kind)  # (N, D/2) each
        if repeat > 1:
            cos, sin = cos.repeat_interleave(repeat, dim=0), sin.repeat_interleave(repeat, dim=0)
        self.prefix_mode = prefix_mode
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def table(self, num_prefix: int) -> tuple[Tensor, Tensor]:
        """(cos, sin), each (num_prefix + N, D/2): the prefix rows (see `with_prefix`), then the grid's."""
        if num_prefix == 0:
            return self.cos, self.sin
        return with_prefix((self.cos, self.sin), num_prefix, self.prefix_mode)
