"""Pixel-level autoregressive generation over 8-bit sub-pixels, ImageGPT style (Chen et al., "Generative
Pretraining from Pixels", https://proceedings.mlr.press/v119/chen20s.html; PixelRNN/PixelCNN,
https://arxiv.org/abs/1601.06759).

The image is the sequence of its sub-pixels in raster order, R, G, B of pixel 0, then pixel 1, ...:

    [prefix (conditioner), v_0, v_1, ..., v_{3HW-2}]  ->  a 256-way softmax for v_0 .. v_{3HW-1}

with the LlamaGen decoder (`llama.py`). Each input value is embedded as `tok_embeddings[v] +
sub_embeddings[channel]` and rotated by the 2-D RoPE of its pixel, so the three sub-pixels of a pixel share a
position and differ by their channel embedding. Tokens come from the pixel identity tokenizer
(`argen/tokenizers/pixel.py`): (B, H*W, 3) in [0, 256). With `sub_tokens=1` the generator models one token
per pixel instead, e.g. a colour palette (iGPT's 512 clusters) or a greyscale value. Sampling is the raster
sampler's over the flat sequence (`to_sequence` / `from_sequence`).

`loss` reports `bits_per_dim`: the negative log-likelihood in bits per image dimension, total bits /
(H * W * image_channels) — the unit of PixelCNN (2.92 on CIFAR-10) and iGPT. Uniform over 256 values is 8.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..heads.categorical import CategoricalHead
from ..registry import register
from ..types import Conditioning, LossOutput, TokenLayout
from .base import Generator
from .llama import DecoderInputs, LlamaConfig, add_llama_decoder, causal_logits, decoder_inputs, decoder_logits, llama_init


@dataclass(frozen=True, kw_only=True)
class PixelGeneratorConfig(LlamaConfig):
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
class PixelGenerator(Generator):
    """ImageGPT-style causal transformer over sub-pixels; sampling, CFG and editing as in raster generation."""

    config: PixelGeneratorConfig

    def __init__(self, config: PixelGeneratorConfig):
        super().__init__(config)
        add_llama_decoder(self, config, rope_repeat=config.sub_tokens)  # sub-pixels share their pixel's rows
        self.sub_embeddings = nn.Embedding(config.sub_tokens, config.dim)
        self.head = CategoricalHead()
        llama_init(self, config.init_std)

    # ------------------------------------------------------------------ pieces the raster sampler drives

    @property
    def sequence_length(self) -> int:
        return self.config.num_tokens

    def to_sequence(self, tokens: Tensor) -> Tensor:
        """Layout tokens (B, H*W, 3) (or (B, H*W) with sub_tokens=1) -> the flat sequence (B, H*W*sub_tokens)."""
        c = self.config
        h, w = c.grid
        shape = (h * w, c.sub_tokens) if c.sub_tokens > 1 else (h * w,)
        if tokens.dim() != 1 + len(shape) or tuple(tokens.shape[1:]) != shape or tokens.dtype != torch.long:
            raise ValueError(f"pixel tokens must be a LongTensor (B, {', '.join(map(str, shape))}) for {h}x{w} "
                             f"images (the pixel tokenizer's layout); got {tuple(tokens.shape)} {tokens.dtype}")
        return tokens.reshape(tokens.shape[0], -1)  # (B, L, S) -> (B, L*S)

    def from_sequence(self, seq: Tensor) -> Tensor:
        B, S = seq.shape[0], self.config.sub_tokens
        return seq.view(B, -1, S) if S > 1 else seq  # (B, L*S) -> (B, L, S)

    def sequence_mask(self, mask: Tensor) -> Tensor:
        """Known pixels (mask (B, H*W)) keep all their sub-pixels: (B, H*W*S)."""
        return mask.repeat_interleave(self.config.sub_tokens, dim=1)

    def embed(self, seq: Tensor, start: int) -> Tensor:
        """Value + channel embeddings (B, T, C) of sub-pixels start..start+T-1 of the flat sequence."""
        channel = torch.arange(start, start + seq.shape[1], device=seq.device) % self.config.sub_tokens
        return self.tok_embeddings(seq) + self.sub_embeddings(channel)

    def decoder_inputs(self, c: Conditioning) -> DecoderInputs:
        return decoder_inputs(self, c)

    def logits(self, x: Tensor, rope: tuple[Tensor, Tensor], mask, cache, inputs: DecoderInputs | None = None) -> Tensor:
        return decoder_logits(self, x, rope, mask, cache, inputs)

    # ------------------------------------------------------------------ network

    def forward(self, tokens: Tensor, c: Conditioning) -> Tensor:
        """Teacher-forced logits (B, L*S, V) over the flat sub-pixel sequence for layout tokens."""
        return causal_logits(self, self.to_sequence(tokens), c)

    def loss(self, tokens: Tensor, c: Conditioning, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE per sub-pixel; metrics add `bits_per_dim` (total bits / (H*W*image_channels))."""
        seq = self.to_sequence(tokens)
        out = self.head.loss(causal_logits(self, seq, c), seq)
        out.metrics["bits_per_dim"] = out.metrics["bits_per_token"] * (self.config.num_tokens / self.config.dims)
        return out

    def nll_bits_per_dim(self, tokens: Tensor, c: Conditioning) -> Tensor:
        """Per-sample negative log-likelihood in bits/dim (B,); call in eval mode for test-set numbers."""
        logits = self(tokens, c)  # (B, L*S, V)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), self.to_sequence(tokens), reduction="none")
        return nll.sum(dim=1) / (self.config.dims * math.log(2.0))
