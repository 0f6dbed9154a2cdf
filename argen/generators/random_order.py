"""Next-token generation in a random order with target-position instructions: RandAR (Pang et al.,
https://arxiv.org/abs/2412.01827).

The LlamaGen decoder (`llama.py`, same parameter names) reads the sequence

    [prefix, q(p_0), tok(z_{p_0}), q(p_1), tok(z_{p_1}), ..., q(p_{N-1})]

where p is a permutation of the N grid positions (a fresh random one per sample in training) and q(p) is a
*position instruction*: one shared learned vector (`pos_instruct_embeddings`) rotated by the 2-D RoPE of the
position p it asks for. The logits read at q(p_i) predict z_{p_i}. Both q(p) and tok(z_p) are rotated in
attention by the RoPE of p itself, so every key carries its own grid position and a query knows its target.
The prefix sits at slots 0..P-1, q(p_i) at P + 2i and tok(z_{p_i}) at P + 2i + 1.

Decoding in any order with several tokens per step (static KV cache with explicit slots) is the random-order
sampler's (`argen/sampling/samplers/random_order.py`); the order is its option, never module state. The
config's `num_steps`, `sample_order` and `step_schedule` are the model's sampling defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..heads.categorical import CategoricalHead
from ..nn import KVCache, NoCache, apply_rope
from ..nn.attention import AttnMask, with_key_padding
from ..registry import register
from ..sampling.schedules import MASK_SCHEDULES, MaskSchedule
from ..types import Conditioning, LossOutput
from .base import Generator
from .llama import LlamaConfig, add_llama_decoder, decoder_logits, llama_init, prefix_keys


@dataclass(frozen=True, kw_only=True)
class RandomOrderConfig(LlamaConfig):
    """RandAR decoder: LlamaGen network + position instructions; sampling defaults for steps and order."""

    num_steps: int | None = None  # decoding steps by default (None: one token per step)
    sample_order: Literal["random", "raster"] = "random"  # default decoding order
    step_schedule: MaskSchedule = "cosine"  # how `num_steps` splits the tokens (sampling.schedules)

    def __post_init__(self):
        super().__post_init__()
        if self.num_steps is not None and not 1 <= self.num_steps <= self.num_tokens:
            raise ValueError(f"num_steps must be in [1, {self.num_tokens}] (the token count) or null for one token "
                             f"per step; got {self.num_steps}")
        if self.sample_order not in ("random", "raster"):
            raise ValueError(f"sample_order must be 'random' or 'raster', got {self.sample_order!r}")
        if self.step_schedule not in MASK_SCHEDULES:
            raise ValueError(f"step_schedule must be one of {', '.join(MASK_SCHEDULES)}; got {self.step_schedule!r}")


def random_orders(batch_size: int, num_tokens: int, rng: torch.Generator | None, device: torch.device) -> Tensor:
    """One uniform random permutation of the N positions per sample, (B, N) on `device` (drawn on rng's)."""
    noise = torch.rand(batch_size, num_tokens, generator=rng, device=rng.device if rng is not None else device)
    return noise.argsort(dim=1).to(device)


@register("random-order", RandomOrderConfig)
class RandomOrderGenerator(Generator):
    """RandAR: next-token prediction over any order of the grid."""

    config: RandomOrderConfig

    def __init__(self, config: RandomOrderConfig):
        super().__init__(config)
        add_llama_decoder(self, config)
        self.pos_instruct_embeddings = nn.Parameter(torch.empty(1, config.dim))
        self.head = CategoricalHead()
        llama_init(self, config.init_std)
        nn.init.normal_(self.pos_instruct_embeddings, std=config.init_std)

    # ------------------------------------------------------------------ pieces the sampler drives

    def rope_at(self, table: tuple[Tensor, Tensor], positions: Tensor, num_prefix: int) -> tuple[Tensor, Tensor]:
        """RoPE rows (B, T, D/2) of grid positions (B, T) from a `rope.table(P)`."""
        rows = positions + num_prefix
        return table[0][rows], table[1][rows]

    def instructions(self, positions: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        """Position instructions (B, T, C): the shared vector rotated per head by the target's RoPE."""
        c = self.config
        B, T = positions.shape
        v = self.pos_instruct_embeddings.view(1, c.num_heads, 1, c.head_dim).expand(B, -1, T, -1)  # (B, H, T, D)
        return apply_rope(v, *rope).transpose(1, 2).reshape(B, T, c.dim)  # (B, H, T, D) -> (B, T, C)

    def logits(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: AttnMask, cache: KVCache | NoCache) -> Tensor:
        return decoder_logits(self, x, rope, mask, cache)

    # ------------------------------------------------------------------ network

    def forward(self, tokens: Tensor, c: Conditioning, order: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, N, V) in layout order (row p predicts position p) for tokens (B, N)
        generated in `order` (B, N) (default raster)."""
        self._check_tokens(tokens)
        if order is None:
            order = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        return self._logits(tokens, c, order)

    def _logits(self, tokens: Tensor, c: Conditioning, order: Tensor) -> Tensor:
        self._check_conditioning(c, tokens.shape[0])
        B, N = tokens.shape
        P = c.prefix.shape[1]
        table = self.rope.table(P)
        rope = self.rope_at(table, order, P)  # (B, N, D/2) each
        q = self.instructions(order, rope)  # (B, N, C)
        z = self.tok_embeddings(tokens.gather(1, order)[:, :-1])  # (B, N-1, C) tokens in generation order
        pairs = torch.stack([q[:, :-1], z], dim=2).flatten(1, 2)  # (B, 2N-2, C): q0 z0 q1 z1 ...
        x = torch.cat([c.prefix.to(q.dtype), pairs, q[:, -1:]], dim=1)  # (B, P + 2N - 1, C)
        cos, sin = (torch.cat([t[:P].expand(B, -1, -1), r.repeat_interleave(2, dim=1)[:, :-1]], dim=1)
                    for t, r in ((table[0], rope[0]), (table[1], rope[1])))  # (B, P + 2N - 1, D/2)
        T = x.shape[1]
        mask = with_key_padding("causal", prefix_keys(c.prefix_mask, T), T, T)
        logits = decoder_logits(self, self.tok_dropout(x), (cos, sin), mask)  # (B, P + 2N - 1, V)
        ordered = logits[:, P::2]  # (B, N, V): slot P + 2i predicts position order[i]
        back = order.argsort(dim=1)  # layout position -> index in the order
        return ordered.gather(1, back[..., None].expand(-1, -1, ordered.shape[-1]))  # (B, N, V) layout order

    def loss(self, tokens: Tensor, c: Conditioning, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE over all N tokens, each sample in its own random order (drawn from `rng`)."""
        self._check_tokens(tokens)
        order = random_orders(tokens.shape[0], self.config.num_tokens, rng, tokens.device)
        return self.head.loss(self._logits(tokens, c, order), tokens)
