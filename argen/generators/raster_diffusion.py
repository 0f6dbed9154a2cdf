"""Causal next-token generation of continuous tokens with a per-token diffusion head: the "AR" variant of MAR
(Li et al., https://arxiv.org/abs/2406.11838, Table 1: causal attention, raster order, one token per step,
Diffusion Loss instead of a categorical head).

The LlamaGen decoder (`llama.py`: 2-D RoPE, RMSNorm, SwiGLU, the conditioning prefix) over

    [prefix (conditioner), W x_0, ..., W x_{N-2}]  ->  z_0 .. z_{N-1}   (the final normed hidden states)

where x_i are the KL-VAE's latents (token_dim each) and W a linear embedding; the diffusion head
(`heads/diffusion.py`) models p(x_i | z_i). Decoding is the raster sampler's, with a KV cache: one token per
step, drawn by the head's respaced denoising with CFG on the noise prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..heads.diffusion import DiffusionHead, DiffusionHeadConfig
from ..registry import register
from ..types import Conditioning, LossOutput, TokenLayout
from .base import Generator
from .llama import (DecoderInputs, LlamaShape, add_llama_decoder, causal_logits, decoder_hidden, decoder_inputs,
                    llama_init)


@dataclass(frozen=True, kw_only=True)
class RasterDiffusionConfig(LlamaShape):
    """A LlamaGen-shaped causal decoder over continuous tokens of `token_dim` values, with a diffusion head.
    Defaults: GPT-B's shape (768 x 12) on KL-16 latents (16x16 tokens of 16 dims) and MAR-B's 6 x 1024 head."""

    token_dim: int = 16
    head: DiffusionHeadConfig = field(default_factory=DiffusionHeadConfig)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.token_dim, bool) or not isinstance(self.token_dim, int) or self.token_dim < 1:
            raise ValueError(f"token_dim must be an integer >= 1 (KL-16: 16), got {self.token_dim!r}")
        if self.head.token_dim != self.token_dim or self.head.cond_dim != self.dim:
            raise ValueError(f"head.token_dim / head.cond_dim ({self.head.token_dim} / {self.head.cond_dim}) must equal "
                             f"token_dim / dim ({self.token_dim} / {self.dim}); set them together")

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(scales=tuple(tuple(s) for s in self.scales), latent_dim=self.token_dim)


@register("raster-diffusion", RasterDiffusionConfig)
class RasterDiffusionGenerator(Generator):
    """Causal raster-order decoder over continuous latents + a diffusion head per token."""

    config: RasterDiffusionConfig

    def __init__(self, config: RasterDiffusionConfig):
        super().__init__(config)
        add_llama_decoder(self, config, embedding=nn.Linear(config.token_dim, config.dim), output=nn.Identity())
        self.head = DiffusionHead(config.head)
        llama_init(self, config.init_std)

    # ------------------------------------------------------------------ pieces the raster sampler drives

    @property
    def sequence_length(self) -> int:
        return self.config.num_tokens

    def _check_latents(self, tokens: Tensor) -> None:
        c = self.config
        if tokens.dim() != 3 or tokens.shape[1:] != (c.num_tokens, c.token_dim) or not tokens.is_floating_point():
            raise ValueError(f"tokens must be float (B, {c.num_tokens}, {c.token_dim}) latents (the KL-VAE's layout); "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")

    def to_sequence(self, tokens: Tensor) -> Tensor:
        self._check_latents(tokens)
        return tokens

    def from_sequence(self, seq: Tensor) -> Tensor:
        return seq

    def sequence_mask(self, mask: Tensor) -> Tensor:
        return mask

    def embed(self, seq: Tensor, start: int) -> Tensor:
        """Input embeddings (B, T, C) of latents (B, T, token_dim)."""
        return self.tok_embeddings(seq.to(self.tok_embeddings.weight.dtype))

    def decoder_inputs(self, c: Conditioning) -> DecoderInputs:
        return decoder_inputs(self, c)

    def logits(self, x: Tensor, rope: tuple[Tensor, Tensor], mask, cache, inputs: DecoderInputs | None = None) -> Tensor:
        """The head input z (R, T, C): the decoder's final normed hidden states (not logits: the head is a
        diffusion model)."""
        return decoder_hidden(self, x, rope, mask, cache, inputs)

    # ------------------------------------------------------------------ network

    def forward(self, tokens: Tensor, c: Conditioning) -> Tensor:
        """Teacher-forced head input z (B, N, dim) for latents (B, N, token_dim)."""
        return causal_logits(self, self.to_sequence(tokens), c)

    def loss(self, tokens: Tensor, c: Conditioning, *, rng: torch.Generator | None = None,
             timesteps: Tensor | None = None, noise: Tensor | None = None) -> LossOutput:
        """Diffusion Loss of every token given the ones before it (timesteps / noise drawn from `rng`)."""
        z = causal_logits(self, self.to_sequence(tokens), c)
        return self.head.loss(z, tokens, rng=rng, timesteps=timesteps, noise=noise)
