"""`generate` (in `loop.py`): the one sampling loop every paradigm uses.

It owns everything that is not paradigm-specific — option parsing, the explicit random generator, CFG batch
doubling (the conditioner's `null` rows) and the guidance schedule, batching, eval/inference mode and the
editing hook — and drives the paradigm's sampler (`samplers/`, one file per paradigm):

    begin -> (predict -> head.sample(out, cfg_scale=s) -> commit -> force)* -> result

    tokens = generate(gen, conditioner, [0, 1, 2], cfg=2.0, top_k=100, seed=0)
    tokens = generate(gen, conditioner, labels, options=SampleOptions(cfg=2.0), decoding=RandomOrderOptions(order="raster"))

Keyword knobs are the fields of `SampleOptions` (temperature, top_k, top_p, cfg, cfg_schedule, cfg_interval) and
of the generator's sampler options (e.g. `order`, `num_steps` for random order; `gumbel`, `prune` for
next-scale); an unknown knob is refused with the list of those that apply.

Editing: `force=Force(tokens, mask)` (or a `(tokens, mask)` tuple) gives known tokens in layout order and a
(B, L) bool mask; after `begin` and after every commit the masked positions take the forced values, so the
sampler conditions every later step on them (in-painting, out-painting, prefix completion).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import fields
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from ..nn.fast_linear import packed_linears
from ..types import Cond, Conditioning, SampleOptions
from . import guidance
from .samplers import DecodeOptions, Force, Sampler, sampler_for

_SAMPLE_FIELDS = tuple(f.name for f in fields(SampleOptions))


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Run `modules` in eval mode under `torch.inference_mode`; their training flags are restored afterwards."""
    flags = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m, was_training in zip(modules, flags):
            m.train(was_training)


def resolve_options(generator: nn.Module, options: SampleOptions | None = None,
                    decoding: DecodeOptions | None = None, **knobs: Any) -> tuple[SampleOptions, DecodeOptions]:
    """(SampleOptions, the sampler's options) from explicit objects and/or knobs by field name."""
    sampler_cls = sampler_for(generator)
    shared = {k: knobs.pop(k) for k in list(knobs) if k in _SAMPLE_FIELDS}
    paradigm = {k: knobs.pop(k) for k in list(knobs) if k in sampler_cls.option_names()}
    if knobs:
        allowed = ", ".join((*_SAMPLE_FIELDS, *sampler_cls.option_names()))
        raise ValueError(f"unknown sampling option(s) {', '.join(sorted(knobs))} for a "
                         f"{type(generator.config).kind} generator; allowed: {allowed}")
    if "cfg_interval" in shared:
        shared["cfg_interval"] = tuple(shared["cfg_interval"])
    opts = (options.replace(**shared) if shared else options) if options is not None else SampleOptions(**shared)
    if decoding is None:
        decoding = sampler_cls.make_options(generator, paradigm)
    elif paradigm:
        decoding = type(decoding)(**{**{f.name: getattr(decoding, f.name) for f in fields(decoding)}, **paradigm})
    return opts, decoding


def make_rng(device: torch.device, seed: int | None = None) -> torch.Generator:
    """A torch.Generator on `device`, seeded (or from OS entropy when seed is None)."""
    rng = torch.Generator(device=device)
    if seed is None:
        rng.seed()
    else:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        rng.manual_seed(seed)
    return rng


def generate(generator: nn.Module, conditioner: nn.Module, cond: Any, *, options: SampleOptions | None = None,
             decoding: DecodeOptions | None = None, seed: int | None = None, rng: torch.Generator | None = None,
             batch_size: int | None = None, force: Force | tuple[Tensor, Tensor] | None = None,
             callback: Callable[[int, int], None] | None = None, pack_weights: bool = False,
             **knobs: Any) -> Tensor:
    """Sample tokens (B, L) in layout order from `generator` for conditioning `cond`.

    cond: anything `conditioner.parse` takes (class ids / names, -1 = unconditional, or a `Cond`).
    options / decoding / knobs: see the module docstring; cfg=1 (the default) is no guidance.
    seed or rng: the only source of randomness; same seed + same options -> same tokens on the same device.
    batch_size: split B into chunks of this many samples (bounded memory); chunks share the rng.
    force: editing hook (see module docstring). callback(step, num_steps) after every step (progress bars).
    pack_weights: opt-in CPU fast path with prepacked weights (see nn/fast_linear.py); off by default because it
        rounds differently from the plain path.
    """
    opts, dec = resolve_options(generator, options, decoding, **knobs)
    sampler = sampler_for(generator)(generator, opts, dec)
    device = generator.device
    cond = conditioner.parse(cond, device)
    if rng is None:
        rng = make_rng(device, seed)
    total = cond.batch_size
    if force is not None:
        force = force if isinstance(force, Force) else Force(*force)
        if force.mask.shape[0] != total:
            raise ValueError(f"force has {force.mask.shape[0]} rows but there are {total} samples")
        force = Force(force.tokens.to(device), force.mask.to(device))
    chunk = batch_size or total
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
    rows = min(chunk, total) * (2 if opts.guided else 1)
    with ExitStack() as stack:
        stack.enter_context(evaluating(generator, conditioner))
        stack.enter_context(packed_linears(generator, rows, enabled=pack_weights))
        outs = [_generate_batch(sampler, conditioner, cond.rows(s, s + chunk), rng,
                                None if force is None else force.rows(s, s + chunk), callback)
                for s in range(0, total, chunk)]
    return torch.cat(outs)


def guided_conditioning(conditioner: nn.Module, cond: Cond, guided: bool, device: torch.device) -> Conditioning:
    """The conditioner's embeddings of `cond` (B rows), or of [cond; null] (2B rows) when `guided`."""
    return conditioner(cond.cat(conditioner.null(cond.batch_size, device)) if guided else cond)


def _generate_batch(sampler: Sampler, conditioner: nn.Module, cond: Cond, rng: torch.Generator,
                    force: Force | None, callback: Callable[[int, int], None] | None) -> Tensor:
    B, opts = cond.batch_size, sampler.opts
    guided = opts.guided
    state = sampler.begin(guided_conditioning(conditioner, cond, guided, sampler.gen.device), B, rng)
    head = sampler.gen.head
    if force is not None:
        sampler.force(state, force)
    while not state.done:
        out = sampler.predict(state, rng)
        scale = 1.0
        if guided:
            scale = guidance.guidance_scale(opts.cfg, opts.cfg_schedule, step=state.step, num_steps=state.num_steps,
                                            progress=sampler.progress(state), interval=opts.cfg_interval)
        tokens, scores = head.sample(out, opts, rng, cfg_scale=scale, guided=guided, **sampler.head_kwargs(state))
        sampler.commit(state, tokens, scores, rng=rng, cfg_scale=scale)
        if force is not None:
            sampler.force(state, force)
        if callback is not None:
            callback(state.step, state.num_steps)
    return sampler.result(state)
