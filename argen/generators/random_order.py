"""Next-token generation in a random order with target-position instructions: RandAR (Pang et al.,
https://arxiv.org/abs/2412.01827).

A LlamaGen decoder (the raster generator's network, same parameter names) reads the sequence

    [class token, q(p_0), tok(z_{p_0}), q(p_1), tok(z_{p_1}), ..., q(p_{N-1})]

where p is a permutation of the N grid positions (a fresh random one per sample in training) and q(p) is a
*position instruction*: one shared learned vector (`pos_instruct_embeddings`) rotated by the 2-D RoPE of the
position p it asks for. The logits read at q(p_i) predict z_{p_i}. Both q(p) and tok(z_p) are rotated in
attention by the RoPE of p itself, so every key carries its own grid position and a query knows its target.

Decoding uses the static KV cache with explicit slots: q(p_i) lives at slot P + 2i and tok(z_{p_i}) at
P + 2i + 1 (P prefix tokens). A step fills k positions i = a..a+k-1 at once:
  * the context written since the last step (the previous step's sampled tokens and the re-computed
    instructions between them) is fed at its slots with a slot-causal mask, so after the step the cache holds
    exactly the teacher-forced sequence up to slot P + 2a;
  * the k instructions are fed at their own slots, each seeing that context and itself only. So each query is
    exactly the model's prediction of its position *as if it were next*: with one token per step the cached
    logits equal the full forward's, and with k > 1 each equals the full forward of an order that puts that
    position right after the context (tested). RandAR lets a step's queries also see each other; argen keeps
    them independent so the parallel step is an exact product of learned conditionals.
The number of steps (`num_steps`, default one token per step; RandAR uses 88 for 256 tokens) is split by a
cosine schedule (few tokens first, more later). The decoding order is "random" (drawn from the sampling rng),
"raster", a seed, or an explicit permutation (`decode_order`). Editing puts the forced positions first in the
order and feeds them as context in the first forward, so every sampled token is conditioned on them.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Union

import torch
from torch import Tensor, nn

from ..conditioning.labels import as_cond
from ..nn import KVCache, apply_rope
from ..registry import register
from ..sampling.schedules import MaskSchedule, tokens_per_step
from ..types import Cond, DecodeState, LossOutput, SampleOptions
from .raster import RasterConfig, RasterGenerator

# "random" (from the sampling rng), "raster", an int seed, or a LongTensor permutation (N,) / (B, N).
OrderSpec = Union[Literal["random", "raster"], int, Tensor]
_SCHEDULES = ("cosine", "linear", "square", "sqrt", "exp")


@dataclass(frozen=True, kw_only=True)
class RandomOrderConfig(RasterConfig):
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
        if self.step_schedule not in _SCHEDULES:
            raise ValueError(f"step_schedule must be one of {', '.join(_SCHEDULES)}; got {self.step_schedule!r}")

    @property
    def seq_len(self) -> int:
        """Prefix + instruction/token pairs; the last token is never fed back."""
        return self.prefix_len + 2 * self.num_tokens - 1


@register("random-order", RandomOrderConfig)
class RandomOrderGenerator(RasterGenerator):
    """RandAR: next-token prediction over any order of the grid, several positions per step when sampling."""

    config: RandomOrderConfig

    def __init__(self, config: RandomOrderConfig):
        super().__init__(config)
        self.pos_instruct_embeddings = nn.Parameter(torch.empty(1, config.dim))
        nn.init.normal_(self.pos_instruct_embeddings, std=config.init_std)
        self._order: OrderSpec | None = None  # set by `decode_order` for the runs inside its block

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "pos_instruct_embeddings"):  # the raster constructor calls this before it exists
            nn.init.normal_(self.pos_instruct_embeddings, std=self.config.init_std)

    # ------------------------------------------------------------------ orders

    def random_orders(self, batch_size: int, rng: torch.Generator | None = None) -> Tensor:
        """One uniform random permutation of the N positions per sample, (B, N) on the model's device."""
        device = rng.device if rng is not None else self.device
        noise = torch.rand(batch_size, self.config.num_tokens, generator=rng, device=device)
        return noise.argsort(dim=1).to(self.device)

    def _resolve_order(self, spec: OrderSpec, batch_size: int) -> Tensor | None:
        """(B, N) permutations for an order spec; None for "random" (drawn later by `randomize`)."""
        n = self.config.num_tokens
        if isinstance(spec, str):
            if spec == "random":
                return None
            if spec == "raster":
                return torch.arange(n, device=self.device).expand(batch_size, n).clone()
            raise ValueError(f"unknown decoding order {spec!r}; use 'random', 'raster', an int seed or a permutation")
        if isinstance(spec, int) and not isinstance(spec, bool):
            return self.random_orders(batch_size, torch.Generator().manual_seed(spec))  # CPU: same on every device
        if not isinstance(spec, Tensor):
            raise ValueError(f"decoding order must be 'random', 'raster', an int seed or a LongTensor; got "
                             f"{type(spec).__name__}")
        order = spec.to(self.device, torch.long)
        if order.dim() == 1:
            order = order.expand(batch_size, -1)
        if order.shape != (batch_size, n):
            raise ValueError(f"a decoding order must have shape ({n},) or ({batch_size}, {n}); got "
                             f"{tuple(spec.shape)} (per-sample orders cannot be split by batch_size)")
        if not torch.equal(order.sort(dim=1).values, torch.arange(n, device=order.device).expand_as(order)):
            raise ValueError(f"each decoding order must be a permutation of 0..{n - 1} (every position once)")
        return order.clone()

    @contextmanager
    def decode_order(self, order: OrderSpec) -> Iterator["RandomOrderGenerator"]:
        """Decode with `order` ("random", "raster", an int seed or a permutation) inside the block:

            with gen.decode_order("raster"):
                tokens = argen.generate(gen, labels, num_steps=16)
        """
        self._resolve_order(order, 1 if not isinstance(order, Tensor) or order.dim() == 1 else order.shape[0])
        previous, self._order = self._order, order
        try:
            yield self
        finally:
            self._order = previous

    # ------------------------------------------------------------------ network

    def _rope_at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """RoPE rows (B, T, D/2) for grid positions (B, T)."""
        rows = positions + self.config.prefix_len
        return self.rope_cos[rows], self.rope_sin[rows]

    def _instructions(self, positions: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        """Position instructions (B, T, C): the shared vector rotated per head by the target's RoPE."""
        c = self.config
        B, T = positions.shape
        v = self.pos_instruct_embeddings.view(1, c.num_heads, 1, c.head_dim).expand(B, -1, T, -1)  # (B, H, T, D)
        return apply_rope(v, *rope).transpose(1, 2).reshape(B, T, c.dim)  # (B, H, T, D) -> (B, T, C)

    def forward(self, tokens: Tensor, labels: Tensor, order: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, N, V) in layout order (row p predicts position p) for tokens (B, N)
        generated in `order` (B, N) (default raster); labels (B,) (-1 = unconditional)."""
        ids = self.cls_embedding.ids(labels.to(tokens.device))
        if order is None:
            order = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        return self._logits(tokens, ids, order)

    def _logits(self, tokens: Tensor, ids: Tensor, order: Tensor) -> Tensor:
        B, N = tokens.shape
        P = self.config.prefix_len
        rope = self._rope_at(order)  # (B, N, D/2) each
        q = self._instructions(order, rope)  # (B, N, C)
        z = self.tok_embeddings(tokens.gather(1, order)[:, :-1])  # (B, N-1, C) tokens in generation order
        pairs = torch.stack([q[:, :-1], z], dim=2).flatten(1, 2)  # (B, 2N-2, C): q0 z0 q1 z1 ...
        x = torch.cat([self.cls_embedding(ids), pairs, q[:, -1:]], dim=1)  # (B, P + 2N - 1, C)
        cos, sin = (torch.cat([t[:P].expand(B, -1, -1), r.repeat_interleave(2, dim=1)[:, :-1]], dim=1)
                    for t, r in ((self.rope_cos, rope[0]), (self.rope_sin, rope[1])))  # (B, P + 2N - 1, D/2)
        logits = self._trunk(self.tok_dropout(x), (cos, sin), causal=True)  # (B, P + 2N - 1, V)
        ordered = logits[:, P::2]  # (B, N, V): slot P + 2i predicts position order[i]
        back = order.argsort(dim=1)  # layout position -> index in the order
        return ordered.gather(1, back[..., None].expand(-1, -1, ordered.shape[-1]))  # (B, N, V) layout order

    def loss(self, tokens: Tensor, cond: Cond | Tensor, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE over all N tokens, each sample in its own random order (drawn from `rng`); labels are
        dropped to the null class with p=class_dropout in training."""
        cond = as_cond(cond, tokens.device)
        self._check_tokens(tokens)
        ids = self.cls_embedding.ids(cond.labels)
        if self.training:
            ids = self.cls_embedding.drop(ids, self.config.class_dropout, rng)
        order = self.random_orders(tokens.shape[0], rng)
        return self.head.loss(self._logits(tokens, ids, order), tokens)

    # ------------------------------------------------------------------ sampling state machine

    def begin(self, cond: Cond, *, batch_size: int, opts: SampleOptions, order: OrderSpec | None = None
              ) -> DecodeState:
        """Start a run. `order` (else the `decode_order` block's, else config.sample_order) fixes the decoding
        order; "random" is drawn by `randomize(state, rng)`. Steps: opts.num_steps, else config.num_steps."""
        rows = self._check_rows(cond, batch_size)
        c, n, device = self.config, self.config.num_tokens, self.device
        spec = order if order is not None else self._order if self._order is not None else c.sample_order
        cache = KVCache(c.depth, rows, c.num_heads, c.seq_len, c.head_dim, dtype=self.dtype, device=device)
        state = DecodeState(
            torch.zeros(batch_size, n, dtype=torch.long, device=device),
            torch.zeros(batch_size, n, dtype=torch.bool, device=device), step=0, num_steps=0,
            cache={"kv": cache, "ids": self.cls_embedding.ids(cond.labels.to(device)), "rows": rows, "filled": 0,
                   "order": self._resolve_order(spec, batch_size), "steps_wanted": opts.num_steps or c.num_steps or n})
        self._schedule(state, 0)
        return state

    def _schedule(self, state: DecodeState, first: int) -> None:
        """Split the order indices first..N-1 into steps (start, size)."""
        remaining = self.config.num_tokens - first
        sizes = tokens_per_step(remaining, min(state.cache["steps_wanted"], remaining),
                                self.config.step_schedule) if remaining else []
        starts = itertools.accumulate(sizes[:-1], initial=first)
        state.cache["steps"] = list(zip(starts, sizes))
        state.num_steps = len(sizes)

    def randomize(self, state: DecodeState, rng: torch.Generator) -> None:
        if state.cache["order"] is None:
            state.cache["order"] = self.random_orders(state.tokens.shape[0], rng)

    def _order_of(self, state: DecodeState) -> Tensor:
        order = state.cache["order"]
        if order is None:
            raise RuntimeError("the decoding order is 'random' but was never drawn: call generator.randomize(state, "
                               "rng) after begin (argen.generate does), or begin with order='raster' or a seed")
        return order

    def progress(self, state: DecodeState) -> float:
        """Fraction of the tokens decided before this step (RandAR ramps CFG over tokens, not steps)."""
        if state.done:
            return 1.0
        return state.cache["steps"][state.step][0] / self.config.num_tokens

    def predict(self, state: DecodeState) -> Tensor:
        """Logits (R, k, V) for the k positions of this step (see the module docstring for the slot layout)."""
        order = self._order_of(state)
        a, k = state.cache["steps"][state.step]
        P, B, R = self.config.prefix_len, state.tokens.shape[0], state.cache["rows"]
        start, ctx_end = state.cache["filled"], P + 2 * a  # context slots [start, ctx_end) are (re)written now
        parts, ropes = [], []
        if start < P:  # first forward: the conditioning prefix
            parts.append(self.cls_embedding(state.cache["ids"]))  # (R, P, C)
            ropes.append((self.rope_cos[:P].expand(R, -1, -1), self.rope_sin[:P].expand(R, -1, -1)))
        first = max(start, P)
        ctx = torch.arange(first, ctx_end, device=order.device)  # context slots after the prefix
        index = torch.cat([(ctx - P) // 2, torch.arange(a, a + k, device=order.device)])  # order index per slot
        pos = order[:, index]  # (B, T) grid position of each fed slot
        rope = self._rope_at(pos)
        x = self._instructions(pos, rope)  # (B, T, C)
        is_token = torch.cat([(ctx - P) % 2 == 1, torch.zeros(k, dtype=torch.bool, device=order.device)])
        if bool(is_token.any()):  # odd context slots hold the tokens decided so far
            x = torch.where(is_token[None, :, None], self.tok_embeddings(state.tokens.gather(1, pos)), x)
        if R != B:  # CFG: the uncond rows see the same tokens and positions
            x, rope = x.repeat(R // B, 1, 1), (rope[0].repeat(R // B, 1, 1), rope[1].repeat(R // B, 1, 1))
        parts.append(x)
        ropes.append(rope)
        x = torch.cat(parts, dim=1)  # (R, T, C)
        cos, sin = torch.cat([r[0] for r in ropes], dim=1), torch.cat([r[1] for r in ropes], dim=1)  # (R, T, D/2)

        queries = P + 2 * torch.arange(a, a + k, device=order.device)
        slots = torch.cat([torch.arange(start, ctx_end, device=order.device), queries])  # (T,)
        kv: KVCache = state.cache["kv"]
        kv.prepare(slots, causal=False)  # we pass the mask ourselves
        cols = torch.arange(kv.length, device=order.device)[None]  # (1, length)
        is_query = torch.arange(len(slots), device=order.device)[:, None] >= len(slots) - k
        # context slots: slot-causal; queries: the context before this step and themselves, not each other
        mask = torch.where(is_query, (cols < ctx_end) | (cols == slots[:, None]), cols <= slots[:, None])
        logits = self._trunk(x, (cos, sin), mask=mask, cache=kv)  # (R, T, V)
        state.cache["filled"] = ctx_end + 1  # q(p_a) saw exactly its teacher-forced context: final
        return logits[:, -k:]  # (R, k, V)

    def commit(self, state: DecodeState, tokens: Tensor, scores: Tensor) -> None:
        a, k = state.cache["steps"][state.step]
        pos = self._order_of(state)[:, a:a + k]  # (B, k)
        state.tokens.scatter_(1, pos, tokens)
        state.known.scatter_(1, pos, torch.ones_like(pos, dtype=torch.bool))
        state.step += 1

    def force(self, state: DecodeState, tokens: Tensor, mask: Tensor) -> None:
        """Known positions keep `tokens`. Before the first forward, each sample's order is re-arranged to put
        its known positions first (relative order kept) and decoding starts after the K = min-over-samples
        known count, so those are fed as context; a sample with more known positions than K has its extra
        ones decoded as usual and overwritten here (they are context for every later step)."""
        if state.cache["filled"] == 0:
            order = self._order_of(state)
            known_first = (~mask.gather(1, order)).long().argsort(dim=1, stable=True)  # (B, N)
            state.cache["order"] = order.gather(1, known_first)
            self._schedule(state, int(mask.sum(dim=1).min()))
        super().force(state, tokens, mask)
