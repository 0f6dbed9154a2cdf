"""Pixel-level autoregressive generation over 8-bit sub-pixels, ImageGPT style (Chen et al., "Generative
Pretraining from Pixels", https://proceedings.mlr.press/v119/chen20s.html; PixelRNN/PixelCNN,
https://arxiv.org/abs/1601.06759).

The image is the sequence of its sub-pixels in raster order, R, G, B of pixel 0, then pixel 1, ...:

    [class token, v_0, v_1, ..., v_{3HW-2}]  ->  a 256-way softmax for v_0 .. v_{3HW-1}

with the raster generator's decoder (LlamaGen blocks, static KV cache, class prefix for CFG). Each input value
is embedded as `tok_embeddings[v] + sub_embeddings[channel]` and rotated by the 2-D RoPE of its pixel, so the
three sub-pixels of a pixel share a position and differ by their channel embedding. Tokens come from the pixel
identity tokenizer (`argen/tokenizers/pixel.py`): (B, H*W, 3) in [0, 256). With `sub_tokens=1` the generator
models one token per pixel instead, e.g. a colour palette (iGPT's 512 clusters) or a greyscale value.

`loss` reports `bits_per_dim`: the negative log-likelihood in bits per image dimension, total bits /
(H * W * image_channels) — the unit of PixelCNN (2.92 on CIFAR-10) and iGPT. Uniform over 256 values is 8.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..conditioning.labels import as_cond
from ..registry import register
from ..types import Cond, DecodeState, LossOutput, TokenLayout
from .raster import RasterConfig, RasterGenerator


@dataclass(frozen=True, kw_only=True)
class PixelGeneratorConfig(RasterConfig):
    """Sub-pixel decoder. `scales` is the image size (h, w) in pixels; `sub_tokens` tokens per pixel (3 for
    R, G, B sub-pixels, 1 for palette or greyscale tokens); `image_channels` the dimensions per pixel that
    bits/dim divides by (3 for RGB, 1 for greyscale)."""

    vocab_size: int = 256
    scales: tuple[tuple[int, int], ...] = ((16, 16),)
    sub_tokens: int = 3
    image_channels: int = 3

    def __post_init__(self):
        super().__post_init__()
        if self.sub_tokens not in (1, 3):
            raise ValueError(f"sub_tokens must be 3 (R, G, B sub-pixels) or 1 (one palette/greyscale token per "
                             f"pixel); got {self.sub_tokens}")
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 3 (RGB) or 1 (greyscale); got {self.image_channels}")
        if self.sub_tokens == 3 and self.image_channels != 3:
            raise ValueError("three sub-pixel tokens per pixel are RGB: set image_channels=3")

    @property
    def num_tokens(self) -> int:
        """Sequence length: every sub-pixel is a token."""
        h, w = self.grid
        return h * w * self.sub_tokens

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(scales=tuple(tuple(s) for s in self.scales), vocab_size=self.vocab_size,
                           tokens_per_position=self.sub_tokens)

    @property
    def dims(self) -> int:
        """Image dimensions per sample (the bits/dim denominator)."""
        h, w = self.grid
        return h * w * self.image_channels


@register("pixel-ar", PixelGeneratorConfig)
class PixelGenerator(RasterGenerator):
    """ImageGPT-style causal transformer over sub-pixels; sampling, CFG and editing as in the raster generator."""

    config: PixelGeneratorConfig

    def __init__(self, config: PixelGeneratorConfig):
        super().__init__(config)
        P, S = config.prefix_len, config.sub_tokens
        # the raster tables have one row per pixel; every sub-pixel of a pixel takes that pixel's row
        self.rope_cos = torch.cat([self.rope_cos[:P], self.rope_cos[P:].repeat_interleave(S, dim=0)])  # (P + L*S, D/2)
        self.rope_sin = torch.cat([self.rope_sin[:P], self.rope_sin[P:].repeat_interleave(S, dim=0)])
        self.sub_embeddings = nn.Embedding(S, config.dim)
        nn.init.normal_(self.sub_embeddings.weight, std=config.init_std)

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        """Value + channel embeddings (B, T, C) of sub-pixels start..start+T-1 of the flat sequence."""
        channel = torch.arange(start, start + tokens.shape[1], device=tokens.device) % self.config.sub_tokens
        return self.tok_embeddings(tokens) + self.sub_embeddings(channel)

    def _flat(self, tokens: Tensor) -> Tensor:
        """Layout tokens (B, H*W, 3) (or (B, H*W) with sub_tokens=1) -> the flat sequence (B, H*W*sub_tokens)."""
        c = self.config
        h, w = c.grid
        shape = (h * w, c.sub_tokens) if c.sub_tokens > 1 else (h * w,)
        if tokens.dim() != 1 + len(shape) or tuple(tokens.shape[1:]) != shape or tokens.dtype != torch.long:
            raise ValueError(f"pixel tokens must be a LongTensor (B, {', '.join(map(str, shape))}) for {h}x{w} "
                             f"images (the pixel tokenizer's layout); got {tuple(tokens.shape)} {tokens.dtype}")
        return tokens.reshape(tokens.shape[0], -1)  # (B, L, S) -> (B, L*S)

    def forward(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Teacher-forced logits (B, L*S, V) over the flat sub-pixel sequence for layout tokens."""
        return super().forward(self._flat(tokens), labels)

    def loss(self, tokens: Tensor, cond: Cond | Tensor, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE per sub-pixel; metrics add `bits_per_dim` (total bits / (H*W*image_channels))."""
        out = super().loss(self._flat(tokens), cond, rng=rng)
        bits_per_token = out.metrics["bits_per_token"]
        out.metrics["bits_per_dim"] = bits_per_token * (self.config.num_tokens / self.config.dims)
        return out

    def nll_bits_per_dim(self, tokens: Tensor, cond: Cond | Tensor) -> Tensor:
        """Per-sample negative log-likelihood in bits/dim (B,) with the labels as given (no dropout); call in
        eval mode for test-set numbers."""
        logits = self(tokens, as_cond(cond, tokens.device).labels)  # (B, L*S, V)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), self._flat(tokens), reduction="none")  # (B, L*S)
        return nll.sum(dim=1) / (self.config.dims * math.log(2.0))

    # ------------------------------------------------------------------ sampling: raster over the flat sequence

    def force(self, state: DecodeState, tokens: Tensor, mask: Tensor) -> None:
        """Known pixels (mask (B, H*W)) keep all their sub-pixels."""
        super().force(state, self._flat(tokens.to(state.tokens.dtype)),
                      mask.repeat_interleave(self.config.sub_tokens, dim=1))

    def result(self, state: DecodeState) -> Tensor:
        B, S = state.tokens.shape[0], self.config.sub_tokens
        return state.tokens.view(B, -1, S) if S > 1 else state.tokens  # (B, L*S) -> (B, L, S)
