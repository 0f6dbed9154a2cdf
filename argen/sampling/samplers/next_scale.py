"""Next-scale decoding (VAR, https://arxiv.org/abs/2404.02905): one whole scale per step with a static KV
cache; each scale's slots are written by index and see every earlier slot (no mask).

The input of scale k > 0 is built in `predict` from the tokens of scale k-1 as they stand then (so tokens forced
by editing enter f_hat), with the bound tokenizer quantizer's `embed_scale` + `next_scale_step`. VAR's guidance
is cfg_schedule="linear_scale" (argen cfg = 1 + VAR's cfg).

Options:
  gumbel  VAR's `more_smooth` (visual quality, not FID): the next inputs mix code vectors with soft weights
          softmax((l (1 + r) + g) / tau), tau = max(gumbel (1 - 0.95 r), 0.005), r = k / (S - 1), g ~ Gumbel,
          on the guided, top-k/top-p filtered logits l. gumbel=0.27 is VAR's. The sampled ids are still the
          tokens (decoding them gives the hard-token image); forced (edited) tokens are never softened.
  prune   approximate, training-free speed-up in the spirit of FastVAR (Guo et al.,
          https://arxiv.org/abs/2503.23367): fractions of tokens the transformer skips at each of the last
          len(prune) scales. At a late scale most tokens only refine what the coarser scales fixed: the blocks
          run on the "pivotal" tokens whose inputs differ most from the scale's mean; the others take the previous
          scale's final hidden states, resized to this scale ('area', as FastVAR). Only the kept tokens enter
          the KV cache (attention carries no positions, so their slots are simply packed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...nn import KVCache
from ...types import Conditioning
from ..guidance import combine
from ..logits import top_k_filter, top_p_filter
from .base import DecodeOptions, Force, Sampler, State, register_sampler


@dataclass(frozen=True)
class NextScaleOptions(DecodeOptions):
    gumbel: float = 0.0  # Gumbel smoothing strength (0 = off; VAR's more_smooth uses 0.27)
    prune: tuple[float, ...] = ()  # fraction of tokens skipped at each of the last len(prune) scales; () = exact

    def __post_init__(self):
        if not (isinstance(self.gumbel, (int, float)) and 0 <= self.gumbel < float("inf")):
            raise ValueError(f"gumbel must be a finite number >= 0 (0 = off, VAR uses 0.27), got {self.gumbel}")
        object.__setattr__(self, "prune", tuple(self.prune))
        if any(not (isinstance(r, (int, float)) and 0.0 <= r < 1.0) for r in self.prune):
            raise ValueError(f"prune ratios must be in [0, 1) (fraction of a scale's tokens skipped), got {self.prune}")


@dataclass
class NextScaleState(State):
    cache: KVCache
    cond_vec: Tensor  # (R, C)
    mods: list  # AdaLN modulations of every block and the head (computed once per run)
    f_hat: Tensor | None = None  # running reconstruction of the quantizer
    freed: int = 0  # cache slots saved by pruning so far
    hidden: Tensor | None = None  # last scale's hidden states, when the next scale restores pruned tokens
    logits: Tensor | None = None  # this step's logits (Gumbel smoothing reads them in commit)
    soft: Tensor | None = None  # Gumbel-smoothed code vectors of the last committed scale
    sampled: Tensor | None = None  # the last committed scale's sampled ids
    forced: Tensor | None = None  # (B, L) positions forced by editing


@register_sampler("next-scale")
class NextScaleSampler(Sampler):
    Options = NextScaleOptions

    def begin(self, c: Conditioning, batch_size: int, rng: torch.Generator) -> NextScaleState:
        gen = self.gen
        rows = self._rows(c, batch_size)
        cfg, device = gen.config, gen.device
        if len(self.options.prune) >= len(cfg.scales):
            raise ValueError(f"prune gives ratios for {len(self.options.prune)} scales, but only the last "
                             f"{len(cfg.scales) - 1} of this model's {len(cfg.scales)} scales can be pruned")
        cache = gen.blocks.new_cache(rows, cfg.num_tokens, dtype=gen.dtype, device=device)
        tokens = torch.zeros(batch_size, cfg.num_tokens, dtype=torch.long, device=device)
        known = torch.zeros(batch_size, cfg.num_tokens, dtype=torch.bool, device=device)
        cond_vec = c.vector.to(gen.dtype)
        return NextScaleState(tokens, known, step=0, num_steps=len(cfg.scales), rows=rows, cache=cache,
                              cond_vec=cond_vec, mods=gen.modulations(cond_vec))

    def progress(self, state: NextScaleState) -> float:
        return state.step / max(state.num_steps - 1, 1)

    def predict(self, state: NextScaleState, rng: torch.Generator) -> Tensor:
        """Logits (R, h_k w_k, V) for scale k = state.step."""
        gen, cfg = self.gen, self.gen.config
        k, rows = state.step, state.rows
        if k == 0:
            x = gen.embed_scale(0, state.cond_vec)
        else:
            a, b = cfg.bounds[k - 1]
            h, w = cfg.scales[k - 1]
            prev = state.tokens[:, a:b]
            h_k = gen.quantizer.embed_scale(prev.view(-1, h, w))  # (B, Cq, h, w)
            if state.soft is not None:  # Gumbel smoothing, except where editing forced a token
                forced = prev != state.sampled
                if state.forced is not None:  # also where the forced token equals the sampled one
                    forced = forced | state.forced[:, a:b]
                forced = forced.view(-1, 1, h, w)
                h_k = torch.where(forced, h_k, state.soft.to(h_k.dtype))
            # f_hat += Phi(BicubicUp(h_k)); next input = AreaDown(f_hat, scale k)
            state.f_hat, nxt = gen.quantizer.next_scale_step(state.f_hat, h_k, k - 1)
            feats = nxt.flatten(2).transpose(1, 2)  # (B, Cq, h', w') -> (B, T, Cq)
            x = gen.embed_scale(k, feats=feats.to(state.cond_vec.dtype))
            if rows != x.shape[0]:
                x = x.repeat(rows // x.shape[0], 1, 1)  # (R, T, C): the same input for cond and uncond rows
        a, b = cfg.bounds[k]
        keep = self._kept_tokens(k)
        if keep is None:
            # Slots: a scale's tokens go right after those of the coarser scales that were kept.
            state.cache.prepare(a - state.freed, b - a, causal=False)  # the scale sees itself and all coarser ones
            hidden = gen.run_blocks(x, state.mods, "full", state.cache)
        else:
            hidden = self._pruned_blocks(x, keep, state)
            state.freed += (b - a) - keep
        if k + 1 < len(cfg.scales) and self._kept_tokens(k + 1) is not None:
            state.hidden = hidden  # the next scale restores its skipped tokens from these
        state.logits = gen.head_logits(hidden, state.mods)
        return state.logits

    def _kept_tokens(self, k: int) -> int | None:
        """How many tokens of scale k the transformer processes under `prune` (None = all of them)."""
        prune = self.options.prune
        S, n = len(self.gen.config.scales), len(prune)
        if k < S - n or prune[k - (S - n)] == 0:
            return None
        h, w = self.gen.config.scales[k]
        return max(1, round(h * w * (1 - prune[k - (S - n)])))

    def _pruned_blocks(self, x: Tensor, keep: int, state: NextScaleState) -> Tensor:
        """The blocks on the `keep` tokens whose inputs differ most from the scale's mean; the rest restored from
        the previous scale's hidden states (see the module docstring)."""
        gen, cfg = self.gen, self.gen.config
        k, C = state.step, x.shape[-1]
        a = cfg.bounds[k][0] - state.freed
        B = state.batch_size
        cond_x = x[:B]  # cond and uncond rows share the scale's input: select once, per image
        score = (cond_x - cond_x.mean(1, keepdim=True)).square().sum(-1)  # (B, T)
        idx = score.topk(keep, dim=1).indices.sort(dim=1).values  # (B, keep)
        idx = idx.repeat(x.shape[0] // B, 1)[..., None].expand(-1, -1, C)  # (R, keep, C)
        state.cache.prepare(a, keep, causal=False)
        part = gen.run_blocks(x.gather(1, idx), state.mods, "full", state.cache)  # (R, keep, C)
        prev = state.hidden  # (R, T', C) of scale k - 1
        (hp, wp), (h, w) = cfg.scales[k - 1], cfg.scales[k]
        grid = prev.transpose(1, 2).reshape(prev.shape[0], C, hp, wp)  # (R, T', C) -> (R, C, h', w')
        full = F.interpolate(grid, size=(h, w), mode="area").flatten(2).transpose(1, 2)  # (R, T, C)
        return full.scatter(1, idx, part)

    def commit(self, state: NextScaleState, tokens: Tensor, scores: Tensor, *, rng: torch.Generator,
               cfg_scale: float) -> None:
        k = state.step
        a, b = self.gen.config.bounds[k]
        state.tokens[:, a:b] = tokens
        state.known[:, a:b] = True
        state.soft = self._gumbel_weights(state, rng, cfg_scale) if self.options.gumbel > 0 else None
        state.sampled = tokens
        state.step = k + 1

    def force(self, state: NextScaleState, force: Force) -> None:
        """Known positions keep their tokens in every scale; remembered so Gumbel smoothing never softens them."""
        super().force(state, force)
        state.forced = force.mask

    def _gumbel_weights(self, state: NextScaleState, rng: torch.Generator, cfg_scale: float) -> Tensor:
        """Soft code vectors (B, Cq, h, w) of the scale just sampled (see the module docstring)."""
        opts = self.opts
        k, S = state.step, state.num_steps
        logits = state.logits.float()  # (R, T, V)
        if logits.shape[0] != state.batch_size:  # [cond; uncond] rows: guide as the loop did
            logits = combine(logits, cfg_scale)
        logits = top_p_filter(top_k_filter(logits, opts.top_k), opts.top_p)
        r = k / max(S - 1, 1)
        tau = max(self.options.gumbel * (1 - 0.95 * r), 0.005)
        noise = -torch.empty_like(logits).exponential_(generator=rng).log()  # Gumbel(0, 1)
        weights = ((logits * (1 + r) + noise) / tau).softmax(-1)  # (B, T, V)
        h, w = self.gen.config.scales[k]
        codes = weights @ self.gen.quantizer.embedding.weight.to(weights.dtype)  # (B, T, Cq)
        return codes.transpose(1, 2).reshape(codes.shape[0], -1, h, w)  # (B, T, Cq) -> (B, Cq, h, w)

    def targets(self, state: NextScaleState, tokens: Tensor) -> Tensor:
        a, b = self.gen.config.bounds[state.step]
        return tokens[:, a:b]

    def reference(self, state: NextScaleState, c: Conditioning) -> Tensor:
        a, b = self.gen.config.bounds[state.step]
        tokens = state.tokens.repeat(state.rows // state.batch_size, 1)  # block-causal: later scales do not matter
        return self.gen(tokens, c)[:, a:b]
