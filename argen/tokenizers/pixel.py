"""Pixel identity tokenizer: each 8-bit sub-pixel value is a token (pixel-level AR, PixelCNN/iGPT style).

van den Oord et al., "Pixel Recurrent Neural Networks" (https://arxiv.org/abs/1601.06759);
Chen et al., "Generative Pretraining from Pixels" (iGPT, https://proceedings.mlr.press/v119/chen20s.html).

Tokens: LongTensor (B, H*W, 3) in [0, 2**bits), raster row-major, one (R, G, B) triple per position
(`TokenLayout.tokens_per_position` = 3). `decode(encode(x)) == x` exactly for images whose values lie on
the 2**bits-level grid (e.g. any 8-bit image mapped to [-1, 1]); other images are rounded to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import register
from ..types import TokenizerOutput, TokenLayout
from .base import Tokenizer, TokenizerConfig


@dataclass(frozen=True, kw_only=True)
class PixelConfig(TokenizerConfig):
    """`bits` per sub-pixel: 8 = the usual 256-value vocabulary; fewer bits give a smaller vocabulary."""

    resolution: int = 32
    bits: int = 8

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8 (vocabulary 2..256), got {self.bits}")

    @property
    def downsample(self) -> int:
        return 1

    @property
    def levels(self) -> int:
        return 2 ** self.bits


@register("pixel", PixelConfig)
class PixelTokenizer(Tokenizer):
    """No parameters: encode = quantise to 2**bits levels, decode = map back to [-1, 1]."""

    config: PixelConfig

    def _layout(self, grid: tuple[int, int]) -> TokenLayout:
        return TokenLayout(scales=(grid,), vocab_size=self.config.levels, tokens_per_position=3)

    def _encode(self, images: Tensor, rng: torch.Generator | None) -> Tensor:
        top = self.config.levels - 1
        # Round in fp32 so bf16/fp16 inputs still land on the right level.
        ids = images.float().clamp(-1, 1).add(1.0).mul(top / 2).round().long()
        return ids.flatten(2).transpose(1, 2)  # (B, 3, H, W) -> (B, L, 3)

    def _decode(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"pixel tokens must be integers in [0, {self.config.levels}), got {tokens.dtype}")
        B = tokens.shape[0]
        top = self.config.levels - 1
        # Same formula as argen.imageio (k / 127.5 - 1 for 8 bits) so dataset images round-trip bit-exactly.
        images = tokens.clamp(0, top).float().div(top / 2).sub(1.0)
        return images.transpose(1, 2).reshape(B, 3, *grid)  # (B, L, 3) -> (B, 3, H, W)

    def _forward(self, images: Tensor, rng: torch.Generator | None) -> TokenizerOutput:
        tokens = self._encode(images, rng)
        recon = self._decode(tokens, (images.shape[2], images.shape[3])).to(images.dtype)
        return TokenizerOutput(recon=recon, tokens=tokens)
