"""Raster decoding (LlamaGen) and pixel-level decoding (ImageGPT): one token of a sequence per step with a
static KV cache. The conditioning prefix is prefilled at step 0, then each step feeds the previous token,
writes its keys/values by index and attends over the filled slots only (the last token is never fed back,
so P + N - 1 slots suffice).

The generator provides the sequence (`sequence_length`, `to_sequence` / `from_sequence`, `sequence_mask`),
its embedding (`embed(seq, start)`), RoPE rows (`rope.table(P)`), the condition as its decoder reads it
(`decoder_inputs(c)`: the prefix, and any AdaLN / cross-attention inputs, prepared once per run) and
`logits(x, rope, mask, cache, inputs)`; pixel generators decode their flat sub-pixel sequence this way, and
the continuous raster generator (MAR's causal variant) its latents, drawn by its diffusion head
(`RasterDiffusionSampler`, whose options are the head's: denoising steps and x0_clip).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...generators.llama import DecoderInputs, prefix_keys
from ...nn import KVCache
from ...nn.attention import with_key_padding
from ...types import Conditioning
from .base import DiffusionHeadOptions, Force, Sampler, State, register_sampler


@dataclass
class RasterState(State):
    cache: KVCache
    inputs: DecoderInputs  # the prefix (R, P, C) fed at step 0, and any per-layer condition
    rope: tuple[Tensor, Tensor]  # (P + N, D/2) each
    keys: Tensor | None = None  # (R, P + N - 1) valid slots (a padded caption prefix); None = all


@register_sampler("raster", "pixel-ar")
class RasterSampler(Sampler):
    def begin(self, c: Conditioning, batch_size: int, rng: torch.Generator) -> RasterState:
        gen = self.gen
        rows = self._rows(c, batch_size)
        inputs = gen.decoder_inputs(c)
        device, n, P = gen.device, gen.sequence_length, inputs.prefix.shape[1]
        cache = gen.layers.new_cache(rows, P + n - 1, dtype=gen.dtype, device=device)
        layout = gen.layout
        if layout.discrete:
            tokens = torch.zeros(batch_size, n, dtype=torch.long, device=device)
        else:  # continuous latents (B, N, D)
            tokens = torch.zeros(batch_size, n, layout.latent_dim, dtype=gen.dtype, device=device)
        known = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
        return RasterState(tokens, known, step=0, num_steps=n, rows=rows, cache=cache, inputs=inputs,
                           rope=gen.rope.table(P), keys=prefix_keys(inputs.prefix_mask, P + n - 1))

    def predict(self, state: RasterState, rng: torch.Generator) -> Tensor:
        """Logits (R, 1, V) for token `state.step`: prefill the prefix at step 0, then feed the previous token."""
        t = state.step
        if t == 0:
            x, start = state.inputs.prefix, 0  # (R, P, C)
        else:
            x = self.gen.embed(state.tokens[:, t - 1:t], t - 1)  # (B, 1, C)
            if state.rows != x.shape[0]:
                x = x.repeat(state.rows // x.shape[0], 1, 1)  # (R, 1, C): same token for cond and uncond rows
            start = state.inputs.prefix.shape[1] + t - 1
        T = x.shape[1]
        state.cache.prepare(start, T)
        cos, sin = state.rope
        mask = with_key_padding(state.cache.attn_mask, state.keys, T, state.cache.length)
        rope = (cos[start:start + T], sin[start:start + T])
        return self.gen.logits(x, rope, mask, state.cache, state.inputs)[:, -1:]  # (R, 1, V)

    def commit(self, state: RasterState, tokens: Tensor, scores: Tensor, *, rng: torch.Generator,
               cfg_scale: float) -> None:
        t = state.step
        state.tokens[:, t] = tokens[:, 0]
        state.known[:, t] = True
        state.step = t + 1

    def force(self, state: RasterState, force: Force) -> None:
        seq = self.gen.to_sequence(force.tokens.to(state.tokens.dtype))
        super().force(state, Force(seq, self.gen.sequence_mask(force.mask)))

    def result(self, state: RasterState) -> Tensor:
        return self.gen.from_sequence(state.tokens)

    def targets(self, state: RasterState, tokens: Tensor) -> Tensor:
        t = state.step
        return self.gen.to_sequence(tokens)[:, t:t + 1]

    def reference(self, state: RasterState, c: Conditioning) -> Tensor:
        reps = state.rows // state.batch_size
        seq = state.tokens.repeat(reps, *([1] * (state.tokens.dim() - 1)))  # causal: tokens >= step do not matter
        t = state.step
        return self.gen(self.gen.from_sequence(seq), c)[:, t:t + 1]


@dataclass(frozen=True)
class RasterDiffusionOptions(DiffusionHeadOptions):
    """The diffusion head's options (diffusion_steps, x0_clip); raster decoding has none of its own."""


@register_sampler("raster-diffusion")
class RasterDiffusionSampler(RasterSampler):
    """Raster decoding of continuous tokens: the head denoises each token from its condition vector."""

    Options = RasterDiffusionOptions

    def head_kwargs(self, state: RasterState) -> dict[str, Any]:
        return self.options.head_options()
