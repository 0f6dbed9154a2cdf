"""Next-token generation in raster order: LlamaGen (Sun et al., https://arxiv.org/abs/2406.06525).

The LlamaGen decoder (`llama.py`) over the sequence

    [prefix (conditioner), tok(z_0), ..., tok(z_{N-2})]  ->  logits for z_0 .. z_{N-1}

with 2-D RoPE on the token grid. The prefix is the conditioner's (one class token; a caption's T tokens for
text): position P - 1 + i predicts z_i. `cond_mode` "cross" or "adaln" instead starts the sequence with the
pooled condition and feeds the caption through cross-attention or AdaLN in every layer (see `llama.py`).
Decoding (static KV cache, one token per step) is the raster sampler's (`argen/sampling/samplers/raster.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..heads.categorical import CategoricalHead
from ..registry import register
from ..types import Conditioning, LossOutput
from .base import Generator
from .llama import (COND_MODES, CondMode, DecoderInputs, LlamaConfig, add_llama_decoder, causal_logits,
                    decoder_inputs, decoder_logits, llama_init)


@dataclass(frozen=True, kw_only=True)
class RasterConfig(LlamaConfig):
    """LlamaGen-style decoder. Defaults are GPT-B. `cond_mode`: how the condition enters ("prefix", LlamaGen's;
    "cross" or "adaln": see `llama.py`)."""

    cond_mode: CondMode = "prefix"

    def __post_init__(self):
        super().__post_init__()
        if self.cond_mode not in COND_MODES:
            raise ValueError(f"cond_mode must be one of {', '.join(COND_MODES)}; got {self.cond_mode!r}")


@register("raster", RasterConfig)
class RasterGenerator(Generator):
    """LlamaGen c2i/t2i transformer: causal next-token prediction in raster order."""

    config: RasterConfig

    def __init__(self, config: RasterConfig):
        super().__init__(config)
        add_llama_decoder(self, config, cond_mode=config.cond_mode)
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

    def decoder_inputs(self, c: Conditioning) -> DecoderInputs:
        """The condition as the decoder reads it (the sequence's start and any per-layer condition), once per run."""
        return decoder_inputs(self, c)

    def logits(self, x: Tensor, rope: tuple[Tensor, Tensor], mask, cache, inputs: DecoderInputs | None = None) -> Tensor:
        """Decoder over inputs x (R, T, C) with RoPE rows (T, D/2); logits (R, T, V) fp32."""
        return decoder_logits(self, x, rope, mask, cache, inputs)

    # ------------------------------------------------------------------ network

    def forward(self, tokens: Tensor, c: Conditioning) -> Tensor:
        """Teacher-forced logits (B, N, V) for tokens (B, N)."""
        return causal_logits(self, self.to_sequence(tokens), c)

    def loss(self, tokens: Tensor, c: Conditioning, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE over all N tokens."""
        seq = self.to_sequence(tokens)
        return self.head.loss(causal_logits(self, seq, c), seq)
