"""Helpers shared by the generator tests: a class conditioner fitted to a generator, perturbed weights, and a
teacher-forced run through a generator's sampler."""
from __future__ import annotations

import torch

from argen.conditioning.labels import ClassConditioner, ClassConditionerConfig
from argen.sampling.loop import guided_conditioning, resolve_options
from argen.sampling.samplers import sampler_for
from argen.types import Cond


def perturb(*modules, scale: float = 0.2, seed: int = 0) -> None:
    """Add noise to every floating parameter (breaks zero-initialised heads so logits carry information)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                if p.is_floating_point() and p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=g) * scale)


def class_conditioner(generator, num_classes: int = 5, seed: int = 1) -> ClassConditioner:
    torch.manual_seed(seed)
    c = ClassConditioner(ClassConditionerConfig(dim=generator.cond_dim, num_classes=num_classes))
    perturb(c, seed=seed)
    return c.eval()


def embed(conditioner, labels, guided: bool = False):
    """Conditioning of labels (B rows), or of [labels; null] (2B rows) when `guided`."""
    cond = conditioner.parse(labels)
    return guided_conditioning(conditioner, cond, guided, torch.device("cpu"))


def teacher_forced(generator, c, tokens: torch.Tensor, *, rng=None, force=None, **knobs):
    """Drive the generator's sampler with the true tokens: yields (state, sampler, head input) per step, with
    the state before the step's commit."""
    opts, dec = resolve_options(generator, **knobs)
    sampler = sampler_for(generator)(generator, opts, dec)
    rng = rng or torch.Generator().manual_seed(0)
    state = sampler.begin(c, tokens.shape[0], rng)
    if force is not None:
        sampler.force(state, force)
    with torch.no_grad():
        while not state.done:
            out = sampler.predict(state, rng)
            yield state, sampler, out
            target = sampler.targets(state, tokens)
            sampler.commit(state, target, torch.zeros(target.shape[:2]), rng=rng, cfg_scale=1.0)


def labels(*ids: int) -> Cond:
    return Cond(labels=torch.tensor(ids))
