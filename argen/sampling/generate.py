"""`generate`: the one sampling loop every paradigm uses.

It owns everything that is not paradigm-specific — option parsing, the explicit random generator, CFG batch
doubling and the guidance schedule, batching, eval/inference mode and the editing hook — and drives the
generator's state machine `begin -> randomize -> (predict -> head.guide -> head.sample -> commit -> force)* -> result`
(see argen/generators/base.py).

Editing: `force=Force(tokens, mask)` (or a `(tokens, mask)` tuple) gives known tokens in layout order and a
(B, L) bool mask; after `begin` and after every commit the masked positions take the forced values, so the
generator conditions every later step on them (in-painting, out-painting, prefix completion).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..conditioning.labels import as_cond
from ..nn.fast_linear import packed_linears
from ..types import Cond, SampleOptions
from . import guidance


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run `module` in eval mode under `torch.inference_mode`; its training flag is restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        module.train(was_training)


@dataclass
class Force:
    """Known tokens (layout order, the tokenizer's token shape) and where they are known: mask (B, L) bool."""

    tokens: Tensor
    mask: Tensor

    def __post_init__(self):
        if self.mask.dtype != torch.bool:
            raise ValueError(f"force mask must be a bool tensor (True = known), got {self.mask.dtype}")
        if self.tokens.shape[:2] != self.mask.shape:
            raise ValueError(f"force tokens {tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)} must agree "
                             "on (B, L)")

    def rows(self, start: int, end: int) -> "Force":
        return Force(self.tokens[start:end], self.mask[start:end])


def _cond_rows(cond: Cond, start: int, end: int) -> Cond:
    sl = lambda t: None if t is None else t[start:end]  # noqa: E731
    return Cond(sl(cond.labels), sl(cond.text), sl(cond.text_mask), sl(cond.image))


def generate(generator, cond: Cond | Tensor | Sequence[int], *, cfg: float = 1.0,
             cfg_schedule: guidance.Schedule = "constant", cfg_interval: tuple[float, float] = (0.0, 1.0),
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_steps: int | None = None,
             gumbel: float = 0.0, prune: Sequence[float] = (), seed: int | None = None, rng: torch.Generator | None = None,
             batch_size: int | None = None, force: Force | tuple[Tensor, Tensor] | None = None,
             options: SampleOptions | None = None, callback: Callable[[int, int], None] | None = None,
             pack_weights: bool | None = None) -> Tensor:
    """Sample tokens (B, L) in layout order from `generator` for conditioning `cond`.

    cond: class ids (LongTensor or list; -1 = unconditional) or a `Cond`.
    cfg / cfg_schedule / cfg_interval: guidance scale (1 = off) and its schedule (see guidance.py).
    temperature (0 = greedy), top_k (0 = all), top_p (1 = all): see sampling/logits.py.
    seed or rng: the only source of randomness; same seed + same options -> same tokens on the same device.
    batch_size: split B into chunks of this many samples (bounded memory); chunks share the rng.
    force: editing hook (see module docstring). options: a SampleOptions instead of the individual knobs.
    callback(step, num_steps) is called after every step (progress bars).
    prune: next-scale only, FastVAR-style speed-up: fractions of tokens the transformer skips at each of the last
        len(prune) scales (their logits come from the previous scale's cached states); () = exact sampling.
    pack_weights: CPU fast path with prepacked weights for the run (see nn/fast_linear.py); None = automatic
        (the generator's `pack_weights_default` if it sets one, else pack when memory allows).
    """
    device = generator.device
    cond = as_cond(cond, device)
    opts = options or SampleOptions(temperature=temperature, top_k=top_k, top_p=top_p, cfg=cfg,
                                    cfg_schedule=cfg_schedule, cfg_interval=tuple(cfg_interval),
                                    num_steps=num_steps, gumbel=gumbel, prune=tuple(prune))
    if opts.prune and not getattr(generator, "supports_prune", False):
        raise ValueError(f"prune (skipping tokens at late scales) applies to next-scale generators only; "
                         f"{type(generator).__name__} predicts no scales")
    if rng is None:
        rng = torch.Generator(device=device)
        if seed is None:
            rng.seed()
        else:
            rng.manual_seed(seed)
    total = cond.batch_size
    if force is not None:
        force = force if isinstance(force, Force) else Force(*force)
        if force.mask.shape[0] != total:
            raise ValueError(f"force has {force.mask.shape[0]} rows but there are {total} samples")
        force = Force(force.tokens.to(device), force.mask.to(device))
    chunk = batch_size or total
    if chunk < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = min(chunk, total) * (2 if opts.cfg != 1.0 else 1)
    if pack_weights is None:  # a generator may know that packing does not pay for its step pattern
        pack_weights = getattr(generator, "pack_weights_default", None)
    with evaluating(generator), packed_linears(generator, rows, enabled=pack_weights):
        outs = [_generate_batch(generator, _cond_rows(cond, s, s + chunk), opts, rng,
                                None if force is None else force.rows(s, s + chunk), callback)
                for s in range(0, total, chunk)]
    return torch.cat(outs)


def _generate_batch(generator, cond: Cond, opts: SampleOptions, rng: torch.Generator, force: Force | None,
                    callback: Callable[[int, int], None] | None) -> Tensor:
    B = cond.batch_size
    guided = opts.cfg != 1.0
    run_cond = guidance.double(cond, generator.null_cond(cond)) if guided else cond  # (2B or B rows)
    state = generator.begin(run_cond, batch_size=B, opts=opts)
    generator.randomize(state, rng)
    head = generator.head
    if force is not None:
        generator.force(state, force.tokens, force.mask)
    while not state.done:
        out = generator.predict(state)
        if guided:
            scale = guidance.guidance_scale(opts.cfg, opts.cfg_schedule, step=state.step, num_steps=state.num_steps,
                                            progress=generator.progress(state), interval=opts.cfg_interval)
            out = head.guide(out, scale)  # (B, ...)
        tokens, scores = head.sample(out, opts, rng)
        generator.commit(state, tokens, scores)
        if force is not None:
            generator.force(state, force.tokens, force.mask)
        if callback is not None:
            callback(state.step, state.num_steps)
    return generator.result(state)
