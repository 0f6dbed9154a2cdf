"""Random-order decoding with several tokens per step (RandAR, https://arxiv.org/abs/2412.01827).

The network's sequence is [prefix, q(p_0), tok(z_{p_0}), q(p_1), ...] (see generators/random_order.py): q(p_i)
lives at cache slot P + 2i and tok(z_{p_i}) at P + 2i + 1. A step fills k positions i = a..a+k-1 at once:
  * the context written since the last step (the previous step's sampled tokens and the re-computed
    instructions between them) is fed at its slots with a slot-causal mask, so after the step the cache holds
    exactly the teacher-forced sequence up to slot P + 2a;
  * the k instructions are fed at their own slots, each seeing that context and itself only. So each query is
    exactly the model's prediction of its position *as if it were next*: with one token per step the cached
    logits equal the full forward's, and with k > 1 each equals the full forward of an order that puts that
    position right after the context (tested). RandAR lets a step's queries also see each other; argen keeps
    them independent so the parallel step is an exact product of learned conditionals.

Options: `num_steps` (default the config's, else one token per step; RandAR uses 88 for 256 tokens) split by a
cosine `step_schedule` (few tokens first, more later), and the decoding `order`: "random" (drawn from the
sampling rng), "raster", an int seed, or an explicit permutation (N,) / (B, N). Editing puts the forced
positions first in the order and feeds them as context in the first forward, so every sampled token is
conditioned on them.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal, Union

import torch
from torch import Tensor

from ...generators.llama import prefix_keys
from ...generators.random_order import random_orders
from ...nn import KVCache
from ...nn.attention import with_key_padding
from ...types import Conditioning
from ..schedules import MASK_SCHEDULES, MaskSchedule, tokens_per_step
from .base import DecodeOptions, Force, Sampler, State, register_sampler

# "random" (from the sampling rng), "raster", an int seed, or a LongTensor permutation (N,) / (B, N).
OrderSpec = Union[Literal["random", "raster"], int, Tensor]


def resolve_order(spec: OrderSpec, batch_size: int, n: int, rng: torch.Generator, device: torch.device) -> Tensor:
    """(B, n) permutations for an order spec: "random" is drawn from the sampling rng, an int seed from its own
    CPU generator (the same order on every device), a tensor is checked to be a permutation."""
    if isinstance(spec, str):
        if spec == "random":
            return random_orders(batch_size, n, rng, device)
        return torch.arange(n, device=device).expand(batch_size, n).clone()  # "raster"
    if isinstance(spec, int):
        return random_orders(batch_size, n, torch.Generator().manual_seed(spec), device)
    order = spec.to(device, torch.long)
    if order.dim() == 1:
        order = order.expand(batch_size, -1)
    if order.shape != (batch_size, n):
        raise ValueError(f"a decoding order must have shape ({n},) or ({batch_size}, {n}); got "
                         f"{tuple(spec.shape)} (per-sample orders cannot be split by batch_size)")
    if not torch.equal(order.sort(dim=1).values, torch.arange(n, device=order.device).expand_as(order)):
        raise ValueError(f"each decoding order must be a permutation of 0..{n - 1} (every position once)")
    return order.clone()


@dataclass(frozen=True)
class RandomOrderOptions(DecodeOptions):
    order: OrderSpec = "random"
    num_steps: int | None = None  # None: one token per step
    step_schedule: MaskSchedule = "cosine"

    def __post_init__(self):
        o = self.order
        if isinstance(o, str) and o not in ("random", "raster"):
            raise ValueError(f"unknown decoding order {o!r}; use 'random', 'raster', an int seed or a permutation")
        if not isinstance(o, (str, int, Tensor)) or isinstance(o, bool):
            raise ValueError(f"decoding order must be 'random', 'raster', an int seed or a LongTensor; got "
                             f"{type(o).__name__}")
        if self.num_steps is not None and (isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int)
                                           or self.num_steps < 1):
            raise ValueError(f"num_steps must be an integer >= 1 (or None: one token per step), got {self.num_steps}")
        if self.step_schedule not in MASK_SCHEDULES:
            raise ValueError(f"step_schedule must be one of {', '.join(MASK_SCHEDULES)}; got {self.step_schedule!r}")


@dataclass
class RandomOrderState(State):
    cache: KVCache
    prefix: Tensor  # (R, P, C)
    rope: tuple[Tensor, Tensor]  # (P + N, D/2) each
    order: Tensor  # (B, N) grid position decoded at each order index
    steps: list[tuple[int, int]]  # (first order index, tokens) of every step
    steps_wanted: int
    filled: int = 0  # cache slots [0, filled) hold their final (teacher-forced) keys/values
    keys: Tensor | None = None  # (R, slots) valid slots (a padded caption prefix); None = all


@register_sampler("random-order")
class RandomOrderSampler(Sampler):
    Options = RandomOrderOptions

    @classmethod
    def default_options(cls, generator) -> RandomOrderOptions:
        c = generator.config
        return RandomOrderOptions(order=c.sample_order, num_steps=c.num_steps, step_schedule=c.step_schedule)

    def begin(self, c: Conditioning, batch_size: int, rng: torch.Generator) -> RandomOrderState:
        gen = self.gen
        rows = self._rows(c, batch_size)
        n, device, P = gen.config.num_tokens, gen.device, c.prefix.shape[1]
        wanted = self.options.num_steps or n
        if wanted > n:
            raise ValueError(f"num_steps must be in [1, {n}] (the token count); got {wanted}")
        cache = gen.layers.new_cache(rows, P + 2 * n - 1, dtype=gen.dtype, device=device)
        state = RandomOrderState(
            torch.zeros(batch_size, n, dtype=torch.long, device=device),
            torch.zeros(batch_size, n, dtype=torch.bool, device=device), step=0, num_steps=0, rows=rows,
            cache=cache, prefix=c.prefix.to(gen.dtype), rope=gen.rope.table(P),
            order=resolve_order(self.options.order, batch_size, n, rng, device), steps=[], steps_wanted=wanted,
            keys=prefix_keys(c.prefix_mask, P + 2 * n - 1))
        self._schedule(state, 0)
        return state

    def _schedule(self, state: RandomOrderState, first: int) -> None:
        """Split the order indices first..N-1 into steps (start, size)."""
        remaining = self.gen.config.num_tokens - first
        sizes = tokens_per_step(remaining, min(state.steps_wanted, remaining),
                                self.options.step_schedule) if remaining else []
        starts = itertools.accumulate(sizes[:-1], initial=first)
        state.steps = list(zip(starts, sizes))
        state.num_steps = len(sizes)

    def progress(self, state: RandomOrderState) -> float:
        """Fraction of the tokens decided before this step (RandAR ramps CFG over tokens, not steps)."""
        if state.done:
            return 1.0
        return state.steps[state.step][0] / self.gen.config.num_tokens

    def predict(self, state: RandomOrderState, rng: torch.Generator) -> Tensor:
        """Logits (R, k, V) for the k positions of this step (see the module docstring for the slot layout)."""
        gen, order = self.gen, state.order
        a, k = state.steps[state.step]
        P, B, R = state.prefix.shape[1], state.batch_size, state.rows
        table = state.rope
        start, ctx_end = state.filled, P + 2 * a  # context slots [start, ctx_end) are (re)written now
        parts, ropes = [], []
        if start < P:  # first forward: the conditioning prefix
            parts.append(state.prefix)  # (R, P, C)
            ropes.append((table[0][:P].expand(R, -1, -1), table[1][:P].expand(R, -1, -1)))
        first = max(start, P)
        ctx = torch.arange(first, ctx_end, device=order.device)  # context slots after the prefix
        index = torch.cat([(ctx - P) // 2, torch.arange(a, a + k, device=order.device)])  # order index per slot
        pos = order[:, index]  # (B, T) grid position of each fed slot
        rope = gen.rope_at(table, pos, P)
        x = gen.instructions(pos, rope)  # (B, T, C)
        is_token = torch.cat([(ctx - P) % 2 == 1, torch.zeros(k, dtype=torch.bool, device=order.device)])
        if bool(is_token.any()):  # odd context slots hold the tokens decided so far
            x = torch.where(is_token[None, :, None], gen.tok_embeddings(state.tokens.gather(1, pos)), x)
        if R != B:  # CFG: the uncond rows see the same tokens and positions
            x, rope = x.repeat(R // B, 1, 1), (rope[0].repeat(R // B, 1, 1), rope[1].repeat(R // B, 1, 1))
        parts.append(x)
        ropes.append(rope)
        x = torch.cat(parts, dim=1)  # (R, T, C)
        cos, sin = torch.cat([r[0] for r in ropes], dim=1), torch.cat([r[1] for r in ropes], dim=1)  # (R, T, D/2)

        queries = P + 2 * torch.arange(a, a + k, device=order.device)
        slots = torch.cat([torch.arange(start, ctx_end, device=order.device), queries])  # (T,)
        kv = state.cache
        kv.prepare(slots, causal=False)  # the mask is built here
        cols = torch.arange(kv.length, device=order.device)[None]  # (1, length)
        is_query = torch.arange(len(slots), device=order.device)[:, None] >= len(slots) - k
        # context slots: slot-causal; queries: the context before this step and themselves, not each other
        mask = torch.where(is_query, (cols < ctx_end) | (cols == slots[:, None]), cols <= slots[:, None])
        mask = with_key_padding(mask, state.keys, len(slots), kv.length)
        logits = gen.logits(x, (cos, sin), mask, kv)  # (R, T, V)
        state.filled = ctx_end + 1  # q(p_a) saw exactly its teacher-forced context: final
        return logits[:, -k:]  # (R, k, V)

    def commit(self, state: RandomOrderState, tokens: Tensor, scores: Tensor, *, rng: torch.Generator,
               cfg_scale: float) -> None:
        a, k = state.steps[state.step]
        pos = state.order[:, a:a + k]  # (B, k)
        state.tokens.scatter_(1, pos, tokens)
        state.known.scatter_(1, pos, torch.ones_like(pos, dtype=torch.bool))
        state.step += 1

    def force(self, state: RandomOrderState, force: Force) -> None:
        """Known positions keep their tokens. Before the first forward, each sample's order is re-arranged to put
        its known positions first (relative order kept) and decoding starts after the K = min-over-samples
        known count, so those are fed as context; a sample with more known positions than K has its extra
        ones decoded as usual and overwritten here (they are context for every later step)."""
        if state.filled == 0:
            known_first = (~force.mask.gather(1, state.order)).long().argsort(dim=1, stable=True)  # (B, N)
            state.order = state.order.gather(1, known_first)
            self._schedule(state, int(force.mask.sum(dim=1).min()))
        super().force(state, force)

    def targets(self, state: RandomOrderState, tokens: Tensor) -> Tensor:
        a, k = state.steps[state.step]
        return tokens.gather(1, state.order[:, a:a + k])

    def reference(self, state: RandomOrderState, c: Conditioning) -> Tensor:
        """Each of the step's k queries from a full forward of the order that puts its position right after
        the context (the other positions of the step come later there)."""
        a, k = state.steps[state.step]
        tokens = state.tokens.repeat(state.rows // state.batch_size, 1)
        order = state.order.repeat(state.rows // state.batch_size, 1)
        out = []
        for j in range(k):
            idx = [*range(a), a + j, *(i for i in range(a, order.shape[1]) if i != a + j)]
            reordered = order[:, idx]
            logits = self.gen(tokens, c, order=reordered)  # (R, N, V) layout order
            out.append(logits.gather(1, reordered[:, a:a + 1, None].expand(-1, -1, logits.shape[-1])))
        return torch.cat(out, dim=1)  # (R, k, V)
