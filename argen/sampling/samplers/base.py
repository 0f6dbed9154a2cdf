"""The sampler contract: one paradigm's decoding process, apart from its network.

A sampler is built per `generate` call for one generator, the shared `SampleOptions` and its own options
(`Options`, a frozen dataclass of the paradigm-only knobs: order, steps, pruning, ...), and drives the
generator's pieces (embeddings, trunk, head input) through a typed state:

    state = sampler.begin(c, batch_size, rng)      # c has B rows, or 2B rows [cond; uncond] for CFG
    while not state.done:
        out = sampler.predict(state, rng)          # head input for this step's positions, R rows
        tokens, scores = head.sample(out, opts, rng, cfg_scale=s, guided=...)   # the loop's part
        sampler.commit(state, tokens, scores, rng=rng, cfg_scale=s)
        sampler.force(state, force)                # editing: known positions keep their values
    tokens = sampler.result(state)                 # layout order

`targets(state, tokens)` (the layout tokens a step commits) and `reference(state, c)` (the step's head input
recomputed by the network's full forward, without caches) let one registry-driven test check every
paradigm's incremental decoding against its network (tests/generators/test_contract.py).
Samplers register for generator kinds with `@register_sampler("kind", ...)`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ...types import Conditioning, SampleOptions

_SAMPLERS: dict[str, type["Sampler"]] = {}


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


@dataclass(frozen=True)
class DecodeOptions:
    """Base of a paradigm's own sampling options (none for plain raster decoding)."""


@dataclass(frozen=True)
class DiffusionHeadOptions(DecodeOptions):
    """Options of the paradigms whose head is the diffusion head (heads/diffusion.py): its denoising steps per token
    and the bound on its predicted clean token; None = the head config's (100 steps for MAR; x0_clip as trained)."""

    diffusion_steps: int | None = None
    x0_clip: float | None = None  # 0: unclipped, as the official MAR code

    def __post_init__(self):
        d = self.diffusion_steps
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 2):
            raise ValueError(f"diffusion_steps must be an integer >= 2 (MAR samples with 100), got {d!r}")
        if self.x0_clip is not None:
            from ...heads.diffusion import check_x0_clip

            check_x0_clip(self.x0_clip)

    def head_options(self) -> dict[str, Any]:
        """The given ones as `DiffusionHead.sample` keywords."""
        kw = {} if self.diffusion_steps is None else {"num_steps": self.diffusion_steps}
        return kw if self.x0_clip is None else {**kw, "x0_clip": self.x0_clip}


@dataclass
class State:
    """What every paradigm's state has: the tokens being decided (the sampler's order, (B, L) or (B, L, D)),
    which are known, the step counter and the number of rows R the network runs on (B, or 2B with CFG)."""

    tokens: Tensor
    known: Tensor
    step: int
    num_steps: int
    rows: int

    @property
    def done(self) -> bool:
        return self.step >= self.num_steps

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]


class Sampler:
    """Base class: subclasses implement begin / predict / commit / targets / reference (see module docstring)."""

    Options: ClassVar[type[DecodeOptions]] = DecodeOptions

    def __init__(self, generator: nn.Module, opts: SampleOptions, options: DecodeOptions):
        if not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, got {type(options).__name__}")
        self.gen, self.opts, self.options = generator, opts, options

    @classmethod
    def default_options(cls, generator: nn.Module) -> DecodeOptions:
        """The paradigm options a generator samples with unless told otherwise (its config's defaults)."""
        return cls.Options()

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls.Options))

    @classmethod
    def make_options(cls, generator: nn.Module, knobs: dict[str, Any]) -> DecodeOptions:
        """The generator's defaults with `knobs` (option fields by name) replaced; validated."""
        return replace(cls.default_options(generator), **knobs) if knobs else cls.default_options(generator)

    # ------------------------------------------------------------------ the state machine

    @staticmethod
    def _rows(c: Conditioning, batch_size: int) -> int:
        """Rows of the conditioning: batch_size, or 2 * batch_size when CFG doubles it ([cond; uncond])."""
        rows = c.batch_size
        if rows not in (batch_size, 2 * batch_size):
            raise ValueError(f"the conditioning has {rows} rows; expected {batch_size} or {2 * batch_size} "
                             "([cond; uncond])")
        return rows

    def begin(self, c: Conditioning, batch_size: int, rng: torch.Generator) -> State:
        raise NotImplementedError

    def predict(self, state: State, rng: torch.Generator) -> Tensor:
        raise NotImplementedError

    def commit(self, state: State, tokens: Tensor, scores: Tensor, *, rng: torch.Generator, cfg_scale: float) -> None:
        raise NotImplementedError

    def force(self, state: State, force: Force) -> None:
        """Editing hook: positions where `force.mask` (B, L) is True take `force.tokens` (layout order) and count
        as known. The default suits paradigms whose state order is the layout order."""
        tokens, mask = force.tokens, force.mask
        m = mask if tokens.dim() == mask.dim() else mask.unsqueeze(-1)
        state.tokens = torch.where(m, tokens, state.tokens)
        state.known |= mask

    def result(self, state: State) -> Tensor:
        """The finished tokens in layout order."""
        return state.tokens

    def progress(self, state: State) -> float:
        """Fraction of the output generated before the current step (drives CFG schedules)."""
        return state.step / max(state.num_steps, 1)

    def head_kwargs(self, state: State) -> dict[str, Any]:
        """Extra keyword arguments of this step's `head.sample` (a diffusion head's number of steps)."""
        return {}

    def targets(self, state: State, tokens: Tensor) -> Tensor:
        """The part of layout `tokens` that this step commits, shaped as `commit` takes it (teacher forcing)."""
        raise NotImplementedError

    def reference(self, state: State, c: Conditioning) -> Tensor:
        """This step's head input computed from scratch by the generator's full forward (no cache)."""
        raise NotImplementedError


def register_sampler(*kinds: str):
    """Class decorator: `cls` samples generators of these registered kinds."""

    def deco(cls: type[Sampler]) -> type[Sampler]:
        for kind in kinds:
            if kind in _SAMPLERS and _SAMPLERS[kind] is not cls:
                raise RuntimeError(f"generator kind '{kind}' already has the sampler {_SAMPLERS[kind].__name__}")
            _SAMPLERS[kind] = cls
        return cls

    return deco


def sampler_for(generator: nn.Module) -> type[Sampler]:
    """The sampler class of a generator (by its registered kind)."""
    kind = type(getattr(generator, "config", None)).kind if hasattr(generator, "config") else None
    if kind not in _SAMPLERS:
        raise ValueError(f"no sampler is registered for generator kind {kind!r} ({type(generator).__name__}); "
                         f"samplers exist for: {', '.join(sorted(_SAMPLERS))}")
    return _SAMPLERS[kind]


def sampler_kinds() -> list[str]:
    return sorted(_SAMPLERS)
