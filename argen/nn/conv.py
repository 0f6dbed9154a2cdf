"""Convolutional encoder/decoder blocks in the taming-transformers / latent-diffusion style.

Esser et al., "Taming Transformers for High-Resolution Image Synthesis" (https://arxiv.org/abs/2012.09841);
Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models" (https://arxiv.org/abs/2112.10752).

Used by the VQ tokenizers (LlamaGen VQ-16/VQ-8, VAR's multi-scale VQVAE) and MAR's KL-16 VAE, which all
share this backbone. Parameter names follow the taming/LDM layout (`encoder.down.{i}.block.{j}.conv1`,
`encoder.mid.attn_1.q`, `decoder.up.{i}.upsample.conv`, ...) so official checkpoints map by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config


@dataclass(frozen=True, kw_only=True)
class ConvNetConfig(Config):
    """Shape of a taming/LDM encoder-decoder pair (not registered: it is nested in tokenizer configs).

    Level i has width `ch * ch_mult[i]`; there are len(ch_mult) - 1 stride-2 stages, so the
    downsampling factor is 2 ** (len(ch_mult) - 1). `attn_resolutions` are feature-map sizes, counted
    from the tokenizer's nominal resolution as in taming (e.g. (16,) at 256 px = the lowest level of f16).
    The decoder has `num_res_blocks + 1` blocks per level (taming, LlamaGen, VAR and MAR all do).
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    decoder_attn: bool = True  # False: attention only in the decoder's mid block (MAR's KL-16)
    mid_attn: bool = True
    z_channels: int = 256
    dropout: float = 0.0
    norm_groups: int = 32

    def __post_init__(self):
        if self.ch < 1 or not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"ch ({self.ch}) and every ch_mult entry ({self.ch_mult}) must be >= 1")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.norm_groups]
        if self.norm_groups < 1 or bad:
            raise ValueError(f"widths {bad} are not divisible by norm_groups={self.norm_groups}; "
                             f"choose ch as a multiple of norm_groups or lower norm_groups")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if self.z_channels < 1:
            raise ValueError(f"z_channels must be >= 1, got {self.z_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def normalize(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv x2 with a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.norm1 = normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv q/k/v (taming's AttnBlock) through SDPA."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = normalize(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        # (B, C, H, W) -> (B, 1, H*W, C): one head over all positions
        q, k, v = (m(h).flatten(2).transpose(1, 2).unsqueeze(1) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after an asymmetric (0, 1, 0, 1) zero pad, as in taming/LDM."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: `block` (res blocks), `attn` (maybe empty), and a resampler or nothing."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module], resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        self._resample = name if resample is not None else None
        if resample is not None:
            self.add_module(name, resample)  # taming names: down.{i}.downsample / up.{i}.upsample

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[i](x)
        return x if self._resample is None else getattr(self, self._resample)(x)


class _Mid(nn.Module):
    def __init__(self, channels: int, cfg: ConvNetConfig):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, cfg.norm_groups, cfg.dropout)
        self.attn_1 = AttnBlock(channels, cfg.norm_groups) if cfg.mid_attn else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, cfg.norm_groups, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, out_channels, H/f, W/f). `resolution` places attention (see ConvNetConfig)."""

    def __init__(self, cfg: ConvNetConfig, resolution: int, out_channels: int | None = None):
        super().__init__()
        g, widths = cfg.norm_groups, [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, c_in = resolution, cfg.ch
        for i, c_out in enumerate(widths):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(c_in, c_out, g, cfg.dropout))
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(c_out, g))
                c_in = c_out
            last = i == len(widths) - 1
            self.down.append(_Level(blocks, attns, None if last else Downsample(c_in), "downsample"))
            res = res if last else res // 2
        self.mid = _Mid(c_in, cfg)
        self.norm_out = normalize(c_in, g)
        self.conv_out = nn.Conv2d(c_in, out_channels or cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, in_channels, h, w) -> (B, 3, h*f, w*f), unclamped. `up[i]` mirrors encoder level i."""

    def __init__(self, cfg: ConvNetConfig, resolution: int, in_channels: int | None = None):
        super().__init__()
        g, widths = cfg.norm_groups, [cfg.ch * m for m in cfg.ch_mult]
        c_in = widths[-1]
        res = resolution // cfg.downsample
        self.conv_in = nn.Conv2d(in_channels or cfg.z_channels, c_in, 3, padding=1)
        self.mid = _Mid(c_in, cfg)
        levels: list[_Level] = []
        for i in reversed(range(len(widths))):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(c_in, widths[i], g, cfg.dropout))
                c_in = widths[i]
                if cfg.decoder_attn and res in cfg.attn_resolutions:
                    attns.append(AttnBlock(c_in, g))
            levels.insert(0, _Level(blocks, attns, Upsample(c_in) if i > 0 else None, "upsample"))
            res = res * 2 if i > 0 else res
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(c_in, g)
        self.conv_out = nn.Conv2d(c_in, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


__all__ = ["ConvNetConfig", "ResnetBlock", "AttnBlock", "Downsample", "Upsample", "Encoder", "Decoder", "normalize"]
