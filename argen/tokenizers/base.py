"""Tokenizer contract: images (B, 3, H, W) in [-1, 1] <-> a flat token sequence.

Every tokenizer (conv autoencoder + any quantizer, the KL-VAE of MAR, the pixel identity tokenizer)
subclasses `Tokenizer` and is registered with its `TokenizerConfig` subclass. Generators see only the
`TokenLayout` and the token tensors, whose shape is fixed by the layout (see `token_shape`):

    discrete, one value per position (VQ, FSQ, LFQ, BSQ)   LongTensor (B, L)        L = h * w, raster row-major
    discrete, several values per position (RVQ depth D,    LongTensor (B, L, D)     D = layout.tokens_per_position
      pixel tokenizer's 3 sub-pixels)
    discrete, multi-scale (VAR)                            LongTensor (B, sum h*w)  coarse -> fine, row-major per scale
    continuous (KL-VAE)                                    FloatTensor (B, L, C)    C = layout.latent_dim

`layout` describes the tokens at the config's nominal `resolution`; `layout_for(h, w)` at any image size
that the downsampling factor divides (single-scale tokenizers are fully convolutional).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config
from ..types import TokenizerOutput, TokenLayout


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig(Config):
    """Base of every tokenizer config. `resolution` is the nominal (square) image size of `layout`. `channels`
    is 3 for colour, or 1 for a tokenizer of greyscale images (trained on grey data: they arrive as 3 equal
    channels), whose `decode` returns the mean of its three output channels in all three, so that samples
    are grey as the data were (an untied decoder otherwise tints them)."""

    resolution: int = 256
    channels: int = 3

    def __post_init__(self):
        if self.resolution < 1:
            raise ValueError(f"resolution must be a positive image size in pixels, got {self.resolution}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 3 (colour) or 1 (greyscale images), got {self.channels!r}")

    @property
    def downsample(self) -> int:
        """Pixels per token side (16 for an f16 tokenizer, 1 for the pixel tokenizer)."""
        raise NotImplementedError

    def resized(self, resolution: int) -> "TokenizerConfig":
        """The same network for images of `resolution` pixels: `resolution` becomes the config's (the one
        record of the training size), and conv attention stays at the same levels (taming counts
        `net.attn_resolutions` in feature-map pixels from the nominal resolution, so they scale with it)."""
        net = getattr(self, "net", None)
        attn = getattr(net, "attn_resolutions", None)
        if not attn or resolution == self.resolution:
            return self.replace(resolution=resolution)
        if any(a * resolution % self.resolution for a in attn):
            raise ValueError(f"resolution {resolution} cannot keep attention at the levels of {self.resolution} px "
                             f"(attn_resolutions {tuple(attn)}); use a size that scales them to whole pixels, e.g. "
                             f"a multiple of {self.resolution}")
        return self.replace(resolution=resolution,
                            net=net.replace(attn_resolutions=tuple(a * resolution // self.resolution for a in attn)))


def token_shape(layout: TokenLayout, batch_size: int) -> tuple[int, ...]:
    """The shape of a token tensor for `layout` (the one rule generators and tokenizers share)."""
    positions = sum(h * w for h, w in layout.scales)
    if not layout.discrete:
        return (batch_size, positions, layout.latent_dim)
    if layout.tokens_per_position > 1:
        return (batch_size, positions, layout.tokens_per_position)
    return (batch_size, positions)


class Tokenizer(nn.Module):
    """Base class: `encode`, `decode`, `forward`, `layout`. Subclasses implement the four `_` hooks.

    `encode(images, rng=None)`: stochastic tokenizers (the KL-VAE) sample the posterior when `rng` is
    given and return its mode otherwise; discrete tokenizers ignore `rng`.
    """

    config: TokenizerConfig

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config

    # ------------------------------------------------------------------ layout

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def layout(self) -> TokenLayout:
        return self.layout_for(self.config.resolution, self.config.resolution)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        """Token layout for images of this size (raises ValueError if the size does not fit)."""
        self._check_size(height, width)
        return self._layout((height // self.downsample, width // self.downsample))

    def _layout(self, grid: tuple[int, int]) -> TokenLayout:
        raise NotImplementedError

    # ------------------------------------------------------------------ public API

    def encode(self, images: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> tokens of shape `token_shape(layout_for(H, W), B)`."""
        self.check_images(images)
        return self._encode(images, rng)

    def decode(self, tokens: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        """Tokens -> images (B, 3, H, W) in [-1, 1]. `grid` is the finest token grid (h, w); by default
        the layout's grid if the token count matches it, else the square grid of that many tokens. A
        greyscale tokenizer (`config.channels == 1`) returns three equal channels."""
        images = self._decode(tokens, self.grid_for(tokens, grid))
        if self.config.channels == 1:
            images = images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
        return images

    def forward(self, images: Tensor, rng: torch.Generator | None = None) -> TokenizerOutput:
        """Encode + decode in one pass with training losses (named, unweighted) and stats."""
        self.check_images(images)
        return self._forward(images, rng)

    @property
    def last_layer(self) -> Tensor | None:
        """Weight of the decoder's output layer (for VQGAN's adaptive GAN weight); None if untrainable."""
        return None

    # ------------------------------------------------------------------ subclass hooks

    def _encode(self, images: Tensor, rng: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _decode(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        raise NotImplementedError

    def _forward(self, images: Tensor, rng: torch.Generator | None) -> TokenizerOutput:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def _check_size(self, height: int, width: int) -> None:
        f = self.downsample
        if height % f or width % f or height < f or width < f:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of this tokenizer's downsampling factor {f}; "
                f"pad or resize images to a multiple of {f} (e.g. 28 px -> {math.ceil(28 / f) * f} px)")

    def check_images(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [-1, 1]; got shape {tuple(images.shape)}"
                             " (repeat grayscale images to 3 channels)")
        if not images.is_floating_point():
            raise ValueError(f"images must be a float tensor in [-1, 1], got {images.dtype}")
        self._check_size(images.shape[2], images.shape[3])

    def grid_for(self, tokens: Tensor, grid: tuple[int, int] | None = None) -> tuple[int, int]:
        """The finest token grid for a token tensor (see `decode`)."""
        if tokens.ndim < 2:
            raise ValueError(f"tokens must be (B, L, ...); got shape {tuple(tokens.shape)}")
        layout = self.layout
        if grid is not None:
            grid = (int(grid[0]), int(grid[1]))
            expected = token_shape(self._layout(grid), tokens.shape[0])
        elif tokens.shape[1] == token_shape(layout, 1)[1]:
            grid, expected = layout.grid, token_shape(layout, tokens.shape[0])
        else:
            side = math.isqrt(tokens.shape[1])
            if side * side != tokens.shape[1] or len(layout.scales) > 1:
                raise ValueError(f"cannot infer the token grid from {tokens.shape[1]} tokens (layout expects "
                                 f"{token_shape(layout, 1)[1]}); pass grid=(h, w) to decode")
            grid = (side, side)
            expected = token_shape(self._layout(grid), tokens.shape[0])
        if tuple(tokens.shape) != expected:
            raise ValueError(f"tokens have shape {tuple(tokens.shape)}, expected {expected} for grid {grid}")
        return grid
