"""Pipeline = tokenizer + conditioner + generator: conditions in, images in [-1, 1] out; saved as one
directory of component folders.

    pipe = argen.Pipeline.load("runs/fmnist-raster/pipeline")   # tokenizer/, conditioner/, generator/
    images = pipe([0, "sneaker", -1], seed=0, cfg=2.0, top_k=50)  # (3, 3, H, W) in [-1, 1]
    pipe.save("out/dir")

The three components are independent modules with their own configs; the pipeline checks that they fit
(the tokenizer's token layout is the generator's, the conditioner's width the generator's) and binds the
generator to the tokenizer (next-scale generators share the tokenizer's quantizer: one copy, saved once).
The stored sampling defaults (`config.sampling`) apply unless a call overrides them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import registry
from .conditioning.base import Conditioner, ConditionerConfig
from .config import Config
from .errors import CheckpointError
from .generators.base import Generator, GeneratorConfig
from .sampling.loop import evaluating, generate
from .tokenizers.base import Tokenizer, TokenizerConfig
from .types import SampleOptions

COMPONENTS = ("tokenizer", "conditioner", "generator")


@dataclass(frozen=True, kw_only=True)
class PipelineConfig(Config):
    """The three component configs and the default sampling options of `__call__`. `conditioner.dim` is set
    to the generator's width."""

    tokenizer: TokenizerConfig
    conditioner: ConditionerConfig
    generator: GeneratorConfig
    sampling: SampleOptions = field(default_factory=SampleOptions)

    def __post_init__(self):
        # The conditioner's width is derived: it follows the generator's (so `--set generator.dim=...` suffices).
        if self.conditioner.dim != self.generator.cond_dim:
            object.__setattr__(self, "conditioner", self.conditioner.replace(dim=self.generator.cond_dim))


@registry.register("pipeline", PipelineConfig)
class Pipeline(nn.Module):
    """`pipe(cond, **sample_kwargs) -> images (B, 3, H, W) in [-1, 1]`; see `argen.generate` for kwargs."""

    config: PipelineConfig
    components = COMPONENTS  # saved as sub-folders, each a model directory of its own

    def __init__(self, config: PipelineConfig):
        super().__init__()
        self.config = config
        self.tokenizer: Tokenizer = registry.build(config.tokenizer)
        self.conditioner: Conditioner = registry.build(config.conditioner)
        self.generator: Generator = registry.build(config.generator)
        self._bind()

    def _bind(self) -> None:
        self.generator.check_conditioner(self.conditioner)
        # Layout check, and for next-scale sharing the tokenizer's codebook + Phi, so that loading the
        # tokenizer's weights sets the generator's inputs too.
        self.generator.bind_tokenizer(self.tokenizer)

    @classmethod
    def from_parts(cls, tokenizer: Tokenizer, conditioner: Conditioner, generator: Generator,
                   sampling: SampleOptions | None = None, **sample_defaults: Any) -> "Pipeline":
        """Wrap existing (e.g. trained) components; `sample_defaults` are SampleOptions fields (cfg, top_k, ...)."""
        sampling = sampling or SampleOptions()
        if sample_defaults:
            sampling = sampling.replace(**sample_defaults)
        cfg = PipelineConfig(tokenizer=tokenizer.config, conditioner=conditioner.config, generator=generator.config,
                             sampling=sampling)
        pipe = cls.__new__(cls)
        nn.Module.__init__(pipe)
        pipe.config, pipe.tokenizer, pipe.conditioner, pipe.generator = cfg, tokenizer, conditioner, generator
        pipe._bind()
        return pipe

    def component_skip(self, name: str) -> tuple[str, ...]:
        """State-dict prefixes of component `name` that another component saves (the bound quantizer)."""
        return self.generator.tokenizer_state_prefixes() if name == "generator" else ()

    # ------------------------------------------------------------------ sampling

    def sample_defaults(self) -> dict[str, Any]:
        """The stored sampling options as keyword knobs."""
        s = self.config.sampling
        return {f.name: getattr(s, f.name) for f in fields(s)}

    def sample_tokens(self, cond: Any, **kwargs: Any) -> Tensor:
        """Tokens (B, L) in layout order; kwargs override the stored sampling defaults."""
        return generate(self.generator, self.conditioner, cond, options=self.config.sampling, **kwargs)

    def decode(self, tokens: Tensor) -> Tensor:
        with evaluating(self.tokenizer):
            return self.tokenizer.decode(tokens).clamp(-1.0, 1.0)

    def forward(self, cond: Any, **kwargs: Any) -> Tensor:
        """Generate images (B, 3, H, W) in [-1, 1] for conditions (class ids / names, -1 = unconditional)."""
        return self.decode(self.sample_tokens(cond, **kwargs))

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | os.PathLike) -> Path:
        from .saving import save

        return save(self, directory)

    save_pretrained = save

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu", *,
             verify: bool = True) -> "Pipeline":
        """`verify=False` skips the weights' checksums and the finite-values check (see argen.saving.load)."""
        from .saving import load

        model = load(directory, map_location=map_location, verify=verify)
        if not isinstance(model, cls):
            raise CheckpointError(f"{directory} holds a {type(model).__name__}, not a pipeline; build one with "
                                  "Pipeline.from_parts(tokenizer, conditioner, generator) or `argen train`")
        return model

    from_pretrained = load

