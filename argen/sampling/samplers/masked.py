"""Iterative parallel decoding of masked generators (MaskGIT, https://arxiv.org/abs/2202.04200).

Start from a grid of [MASK] (plus any known tokens, for editing). At step t of T, with r = (t + 1) / T:
  1. the network predicts every position; a token is sampled for every still-masked position (the loop's head:
     temperature, top-k/top-p, CFG on the logits);
  2. confidence c_i = log p(sampled_i) + tau_t g_i with g_i ~ Gumbel(0, 1) and the annealed choice temperature
     tau_t = choice_temperature (1 - r); known positions get +inf;
  3. the n = clip(floor(N0 gamma(r)), 1, unknown - 1) least confident positions are masked again (n = 0 at the
     last step), where N0 is the number of positions unknown when decoding started and gamma the mask schedule.
So T steps decode any grid (T is free; MaskGIT uses 8-12 at 256 px), and editing is "start with the known
tokens in place" (MaskGIT's in/out-painting). There is no KV cache: attention is bidirectional.

Options: `num_steps`, `schedule` (mask schedule gamma) and `choice_temperature` (0 = always keep the most
confident), defaulting to the generator config's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...types import Conditioning
from ..schedules import MASK_SCHEDULES, MaskSchedule, mask_ratio
from .base import DecodeOptions, Sampler, State, register_sampler


@dataclass(frozen=True)
class MaskedOptions(DecodeOptions):
    num_steps: int = 8
    schedule: MaskSchedule = "cosine"
    choice_temperature: float = 4.5

    def __post_init__(self):
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {self.num_steps}")
        if self.schedule not in MASK_SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(MASK_SCHEDULES)}; got {self.schedule!r}")
        if not (isinstance(self.choice_temperature, (int, float)) and math.isfinite(self.choice_temperature)
                and self.choice_temperature >= 0):
            raise ValueError(f"choice_temperature must be a finite number >= 0 (MaskGIT: 4.5), got "
                             f"{self.choice_temperature}")


@dataclass
class MaskedState(State):
    c: Conditioning  # R rows
    initial_unknown: Tensor | None = None  # (B,) positions unknown when decoding started (set at the first commit)


@register_sampler("masked")
class MaskedSampler(Sampler):
    Options = MaskedOptions

    @classmethod
    def default_options(cls, generator) -> MaskedOptions:
        c = generator.config
        return MaskedOptions(num_steps=c.num_steps, schedule=c.mask_schedule, choice_temperature=c.choice_temperature)

    def begin(self, c: Conditioning, batch_size: int, rng: torch.Generator) -> MaskedState:
        rows = self._rows(c, batch_size)
        n, device = self.gen.config.num_tokens, self.gen.device
        if self.options.num_steps > n:
            raise ValueError(f"num_steps must be in [1, {n}] (the token count); got {self.options.num_steps}")
        tokens = torch.full((batch_size, n), self.gen.config.mask_id, dtype=torch.long, device=device)
        known = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
        return MaskedState(tokens, known, step=0, num_steps=self.options.num_steps, rows=rows, c=c)

    def _inputs(self, state: MaskedState) -> Tensor:
        return state.tokens.repeat(state.rows // state.batch_size, 1)  # (R, N): cond and uncond rows alike

    def predict(self, state: MaskedState, rng: torch.Generator) -> Tensor:
        """Logits (R, N, V) of every position (known ones are kept at commit)."""
        return self.gen(self._inputs(state), state.c)

    def progress(self, state: MaskedState) -> float:
        """Fraction of the tokens known before this step."""
        return float(state.known.float().mean())

    def commit(self, state: MaskedState, tokens: Tensor, scores: Tensor, *, rng: torch.Generator,
               cfg_scale: float) -> None:
        unknown = ~state.known  # (B, N)
        left = unknown.sum(dim=1)  # (B,)
        if state.initial_unknown is None:
            state.initial_unknown = left.clone()
        t, T = state.step, state.num_steps
        r = (t + 1) / T
        if t + 1 >= T:
            remask = torch.zeros_like(left)
        else:
            remask = torch.floor(state.initial_unknown.float() * mask_ratio(r, self.options.schedule)).long()
            remask = torch.minimum(remask.clamp(min=1), (left - 1).clamp(min=0))  # keep >= 1 masked, decode >= 1
        confidence = scores.float()
        tau = self.options.choice_temperature * (1.0 - r)
        if tau > 0:
            gumbel = -torch.empty_like(confidence).exponential_(generator=rng).log()  # Gumbel(0, 1)
            confidence = confidence + tau * gumbel
        confidence = confidence.masked_fill(~unknown, float("inf"))
        ranks = confidence.argsort(dim=1).argsort(dim=1)  # 0 = least confident
        stay = ranks < remask[:, None]  # the `remask` least confident unknown positions stay masked
        reveal = unknown & ~stay
        state.tokens = torch.where(reveal, tokens, state.tokens)
        state.known |= reveal
        state.step = t + 1

    def targets(self, state: MaskedState, tokens: Tensor) -> Tensor:
        return tokens  # every position is predicted; commit keeps the ones it reveals

    def reference(self, state: MaskedState, c: Conditioning) -> Tensor:
        return self.gen(self._inputs(state), c)
