"""Next-token generation in raster order: LlamaGen (Sun et al., https://arxiv.org/abs/2406.06525).

The LlamaGen decoder (`llama.py`) over the sequence

    [prefix (conditioner), tok(z_0), ..., tok(z_{N-2})]  ->  logits for z_0 .. z_{N-1}

with 2-D RoPE on the token grid. The prefix is the conditioner's (one class token; a caption's T tokens for
text): position P - 1 + i predicts z_i. Decoding (static KV cache, one token per step) is the raster sampler's
(`argen/sampling/samplers/raster.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..heads.categorical import CategoricalHead
from ..registry import register
from ..types import Conditioning, LossOutput
from .base import Generator
from .llama import LlamaConfig, add_llama_decoder, causal_logits, decoder_logits, llama_init


@dataclass(frozen=True, kw_only=True)
class RasterConfig(LlamaConfig):
    """LlamaGen-style decoder. Defaults are GPT-B."""


@register("raster", RasterConfig)
class RasterGenerator(Generator):
    """LlamaGen c2i/t2i transformer: causal next-token prediction in raster order."""

    config: RasterConfig

    def __init__(self, config: RasterConfig):
        super().__init__(config)
        add_llama_decoder(self, config)
        self.head = CategoricalHead()
        llama_init(self, config.init_std)

    # ------------------------------------------------------------------ pieces the raster sampler drives

    @property
    def sequence_length(self) -> int:
        """Tokens the sampler decodes (one per step)."""
        return self.config.num_tokens

    def to_sequence(self, tokens: Tensor) -> Tensor:
        """Layout tokens -> the decoded sequence (B, N): the same for a raster grid."""
        self._check_tokens(tokens)
        return tokens

    def from_sequence(self, seq: Tensor) -> Tensor:
        return seq

    def sequence_mask(self, mask: Tensor) -> Tensor:
        """A (B, L) mask of layout positions -> one over sequence tokens."""
        return mask

    def embed(self, seq: Tensor, start: int) -> Tensor:
        """Input embeddings (B, T, C) of sequence tokens (B, T) that sit at sequence indices start..start+T-1."""
        return self.tok_embeddings(seq)

    def logits(self, x: Tensor, rope: tuple[Tensor, Tensor], mask, cache) -> Tensor:
        """Decoder over inputs x (R, T, C) with RoPE rows (T, D/2); logits (R, T, V) fp32."""
        return decoder_logits(self, x, rope, mask, cache)

    # ------------------------------------------------------------------ network

    def forward(self, tokens: Tensor, c: Conditioning) -> Tensor:
        """Teacher-forced logits (B, N, V) for tokens (B, N)."""
        return causal_logits(self, self.to_sequence(tokens), c)

    def loss(self, tokens: Tensor, c: Conditioning, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE over all N tokens."""
        seq = self.to_sequence(tokens)
        return self.head.loss(causal_logits(self, seq, c), seq)
