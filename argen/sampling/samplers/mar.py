"""MAR decoding (https://arxiv.org/abs/2406.11838): continuous tokens revealed in a random order, a cosine
number per step, each drawn by the diffusion head.

One order per image is fixed in advance (random, not confidence-based as in MaskGIT). At step k of K the
positions still masked after the step are the first m_{k+1} = clip(floor(U0 cos(pi/2 (k+1)/K)), 1, m_k - 1)
of the order (U0 = the tokens unknown at the start: 256 for a fresh 16x16 grid), the step predicts the ones
between, and the last step predicts everything left. Every step re-runs the network on the current state (it is
bidirectional: no KV cache) and the head only on the positions being revealed, with temperature on the head's
noise and classifier-free guidance on its noise prediction. MAR's linear guidance is the shared
cfg_schedule="linear" with this sampler's progress: the fraction decided *after* the step, (U0 - m_{k+1}) / U0
(so the last step uses 1 + (s - 1)(U0 - 1) / U0, as the official code).

Options: `num_steps` (K, default the config's), `order` ("random" from the sampling rng, "raster", an int seed
or a permutation), `diffusion_steps` (the head's respaced denoising steps; default the head config's 100), `x0_clip`
(the bound on the head's predicted clean token; default the head config's, see heads/diffusion.py), and
`cfg_refresh` (approximate, training-free, in the spirit of LazyMAR's condition cache, https://arxiv.org/abs/
2503.12450): with guidance, the unconditional half of the network runs only every `cfg_refresh`-th step; in
between its condition vectors are the conditional ones minus the (cond - uncond) difference cached at the last
full step, so those steps run the transformer on half the rows; `token_refresh` (approximate, LazyMAR's token
cache): the network runs in full only every `token_refresh`-th step; in between it recomputes only the buffer, the
tokens revealed since and the positions being predicted, over the other positions' cached keys and values (see
`MARFeatureCache` in generators/mar.py); `head_refresh` (approximate, LazyMAR's diffusion-head cache): the head
runs in full only every `head_refresh`-th denoising step and the last; the others run the conditional rows and the
first and last res-blocks only (see `DiffusionHead.sample`). 1 (the default of all three) is exact MAR.
Editing puts the known positions at the end of the order, which is revealed first, so they are context from the
first step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...generators.mar import MARFeatureCache
from ...types import Conditioning
from .base import DiffusionHeadOptions, Force, Sampler, State, register_sampler
from .random_order import OrderSpec, resolve_order


@dataclass(frozen=True)
class MAROptions(DiffusionHeadOptions):
    num_steps: int = 64
    order: OrderSpec = "random"
    cfg_refresh: int = 1  # run the unconditional rows every this many steps (1: every step, exact)
    token_refresh: int = 1  # run every position through the network every this many steps (1: exact)
    head_refresh: int = 1  # run the whole diffusion head every this many denoising steps (1: exact)

    def __post_init__(self):
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1 (MAR: 64 fast, 256 for FID), got {self.num_steps}")
        if isinstance(self.order, str) and self.order not in ("random", "raster"):
            raise ValueError(f"unknown decoding order {self.order!r}; use 'random', 'raster', an int seed or a "
                             "permutation")
        super().__post_init__()
        _check_refresh("cfg_refresh", self.cfg_refresh, "2 runs the unconditional rows every other step")
        _check_refresh("token_refresh", self.token_refresh, "4 runs every position through the network every 4th step")
        _check_refresh("head_refresh", self.head_refresh, "LazyMAR uses 7")


def _check_refresh(name: str, value: object, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (1 = exact; {hint}), got {value!r}")


@dataclass
class MARState(State):
    c: Conditioning  # R rows
    order: Tensor  # (B, L) position revealed at each order index: the end of the order is revealed first
    initial_unknown: Tensor | None = None  # (B,)
    to_predict: Tensor | None = None  # (B, L) bool: positions this step reveals (set by predict)
    masked_after: Tensor | None = None  # (B,) the count MAR's schedule keeps masked after this step (for CFG)
    guidance_delta: Tensor | None = None  # (B, L, dim) z_cond - z_uncond at the last full step (cfg_refresh > 1)
    features: MARFeatureCache | None = None  # R rows (token_refresh > 1)


@register_sampler("mar")
class MARSampler(Sampler):
    Options = MAROptions

    @classmethod
    def default_options(cls, generator) -> MAROptions:
        return MAROptions(num_steps=generator.config.num_steps)

    def head_kwargs(self, state: MARState) -> dict:
        kw = self.options.head_options()
        return kw if self.options.head_refresh == 1 else {**kw, "refresh": self.options.head_refresh}

    def begin(self, c: Conditioning, batch_size: int, rng: torch.Generator) -> MARState:
        gen = self.gen
        rows = self._rows(c, batch_size)
        cfg, device = gen.config, gen.device
        if self.options.num_steps > cfg.num_tokens:
            raise ValueError(f"num_steps must be in [1, {cfg.num_tokens}] (the token count); got {self.options.num_steps}")
        tokens = torch.zeros(batch_size, cfg.num_tokens, cfg.token_dim, dtype=gen.dtype, device=device)
        known = torch.zeros(batch_size, cfg.num_tokens, dtype=torch.bool, device=device)
        order = resolve_order(self.options.order, batch_size, cfg.num_tokens, rng, device)
        features = gen.feature_cache(rows) if self.options.token_refresh > 1 else None
        return MARState(tokens, known, step=0, num_steps=self.options.num_steps, rows=rows, c=c, order=order,
                        features=features)

    def _repeat(self, state: MARState, t: Tensor) -> Tensor:
        return t.repeat(state.rows // state.batch_size, *([1] * (t.dim() - 1)))

    def _plan(self, state: MARState) -> None:
        """This step's positions to reveal and the masked count after it (MAR's schedule)."""
        unknown = ~state.known
        left = unknown.sum(dim=1)  # (B,)
        if state.initial_unknown is None:
            state.initial_unknown = left.clone()
        k, K = state.step, state.num_steps
        target = torch.floor(state.initial_unknown.double() * math.cos(math.pi / 2 * (k + 1) / K)).long()
        masked_after = torch.maximum(torch.ones_like(left), torch.minimum(left - 1, target))
        # the order lists unknown positions first: the first `masked_after` of them stay masked
        ranks = state.order.argsort(dim=1)  # position -> index in the order
        stay = ranks < masked_after[:, None]
        state.to_predict = unknown if k + 1 >= K else unknown & ~stay
        state.masked_after = masked_after

    def predict(self, state: MARState, rng: torch.Generator) -> Tensor:
        """Condition vectors (R * k, dim) of the positions this step reveals, rows [cond ...; uncond ...]."""
        self._plan(state)
        B, guided = state.batch_size, state.rows == 2 * state.batch_size
        reuse = guided and state.guidance_delta is not None and state.step % self.options.cfg_refresh != 0
        cache, lazy = state.features, state.step % self.options.token_refresh != 0
        if reuse:  # condition cache: the cond rows only, the uncond ones from the cached difference
            zc = self.gen.condition(state.tokens, state.known, state.c.rows(0, B),
                                    cache=None if cache is None else cache.rows(B), lazy=lazy,
                                    predict=state.to_predict)
            z = torch.cat([zc, zc - state.guidance_delta])
        else:
            z = self.gen.condition(self._repeat(state, state.tokens), self._repeat(state, state.known), state.c,
                                   cache=cache, lazy=lazy, predict=self._repeat(state, state.to_predict))
            if guided and self.options.cfg_refresh > 1:
                state.guidance_delta = z[:B] - z[B:]
        return z[self._repeat(state, state.to_predict)]

    def progress(self, state: MARState) -> float:
        """The fraction decided after this step (MAR's linear CFG ramp); requires predict to have run."""
        if state.masked_after is None:
            return 0.0
        u0, m = state.initial_unknown.double(), state.masked_after.double()
        return float(((u0 - m) / u0.clamp(min=1)).mean())

    def commit(self, state: MARState, tokens: Tensor, scores: Tensor, *, rng: torch.Generator,
               cfg_scale: float) -> None:
        state.tokens[state.to_predict] = tokens.to(state.tokens.dtype)
        state.known |= state.to_predict
        state.step += 1

    def force(self, state: MARState, force: Force) -> None:
        """Known positions keep their tokens; before the first step each order is re-arranged so the known
        positions come last (the end of the order is revealed first): they are context from the first step."""
        if state.step == 0 and state.initial_unknown is None:
            unknown_first = force.mask.gather(1, state.order).long().argsort(dim=1, stable=True)  # (B, L)
            state.order = state.order.gather(1, unknown_first)
        super().force(state, Force(force.tokens.to(state.tokens.dtype), force.mask))

    def targets(self, state: MARState, tokens: Tensor) -> Tensor:
        return tokens[state.to_predict]

    def reference(self, state: MARState, c: Conditioning) -> Tensor:
        z = self.gen(self._repeat(state, state.tokens), c, self._repeat(state, state.known))
        return z[self._repeat(state, state.to_predict)]
