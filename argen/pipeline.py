"""Pipeline = tokenizer + generator: class labels in, images in [-1, 1] out; saved as one directory.

    pipe = argen.Pipeline.load("runs/fmnist-raster")          # config.json + model.safetensors
    images = pipe([0, 1, 2], seed=0, cfg=2.0, top_k=50)        # (3, 3, H, W) in [-1, 1]
    pipe.save("out/dir")

The config nests both component configs (each with its `kind`), so `argen.load(dir)` rebuilds the whole
thing with nothing else; the stored sampling defaults (cfg, top_k, ...) apply unless a call overrides them.
Class conditioning lives inside the generator (its class embedder); text/image conditioners would be a third
component here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import Tensor, nn

from . import registry
from .config import Config
from .errors import CheckpointError
from .generators.base import Generator, GeneratorConfig
from .sampling.generate import evaluating, generate
from .tokenizers.base import Tokenizer, TokenizerConfig
from .types import Cond


def _preset(name: str) -> Config:
    from .presets import get_config

    return get_config(name)


@dataclass(frozen=True, kw_only=True)
class PipelineConfig(Config):
    """Tokenizer + generator configs, class names and default sampling options for `__call__`."""

    tokenizer: TokenizerConfig = field(default_factory=lambda: _preset("vq-tiny"))
    generator: GeneratorConfig = field(default_factory=lambda: _preset("llamagen-tiny"))
    class_names: tuple[str, ...] = ()
    cfg: float = 1.0
    cfg_schedule: Literal["constant", "linear", "linear_scale", "interval"] = "constant"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        n = self.generator.num_classes
        if self.class_names and len(self.class_names) != n:
            raise ValueError(f"class_names has {len(self.class_names)} entries but generator.num_classes is {n}; "
                             "give one name per class or none")
        if self.cfg < 0 or self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError("sampling defaults out of range: need cfg >= 0, temperature >= 0, top_k >= 0, "
                             "0 < top_p <= 1")

    @property
    def sample_defaults(self) -> dict[str, Any]:
        return dict(cfg=self.cfg, cfg_schedule=self.cfg_schedule, temperature=self.temperature, top_k=self.top_k,
                    top_p=self.top_p)


@registry.register("pipeline", PipelineConfig)
class Pipeline(nn.Module):
    """`pipe(labels, **sample_kwargs) -> images (B, 3, H, W) in [-1, 1]`; see `argen.generate` for kwargs."""

    config: PipelineConfig

    def __init__(self, config: PipelineConfig):
        super().__init__()
        self.config = config
        self.tokenizer: Tokenizer = registry.build(config.tokenizer)
        self.generator: Generator = registry.build(config.generator)
        # Layout check, and for next-scale a copy of the tokenizer's codebook + Phi, so a fresh pipeline
        # is consistent before any weights load (loading then overwrites both copies with saved values).
        self.generator.bind_tokenizer(self.tokenizer)

    @classmethod
    def from_parts(cls, tokenizer: Tokenizer, generator: Generator, **options: Any) -> "Pipeline":
        """Wrap existing (e.g. trained) components; `options` are PipelineConfig fields (class_names, cfg, ...)."""
        cfg = PipelineConfig(tokenizer=tokenizer.config, generator=generator.config, **options)
        pipe = cls.__new__(cls)
        nn.Module.__init__(pipe)
        pipe.config, pipe.tokenizer, pipe.generator = cfg, tokenizer, generator
        generator.bind_tokenizer(tokenizer)
        return pipe

    def labels_for(self, names: Sequence[str | int]) -> list[int]:
        """Class ids from names (case-insensitive) or ids ("sneaker", "7", 7); -1 / "none" = unconditional."""
        out = []
        for n in names:
            s = str(n).strip()
            if s.lstrip("-").isdigit():
                out.append(int(s))
            elif s.lower() in ("none", "null", "uncond"):
                out.append(-1)
            elif s.lower() in (lowered := [c.lower() for c in self.config.class_names]):
                out.append(lowered.index(s.lower()))
            else:
                known = ", ".join(self.config.class_names) or "(this pipeline has no class names; use ids)"
                raise ValueError(f"unknown class {s!r}; use an id in [0, {self.generator.config.num_classes}) or one of: {known}")
        return out

    def sample_tokens(self, labels: Cond | Tensor | Sequence[int], **kwargs: Any) -> Tensor:
        """Tokens (B, L) in layout order; kwargs override the stored sampling defaults."""
        return generate(self.generator, labels, **{**self.config.sample_defaults, **kwargs})

    def decode(self, tokens: Tensor) -> Tensor:
        with evaluating(self.tokenizer):
            return self.tokenizer.decode(tokens).clamp(-1.0, 1.0)

    def forward(self, labels: Cond | Tensor | Sequence[int], **kwargs: Any) -> Tensor:
        """Generate images (B, 3, H, W) in [-1, 1] for class ids (-1 = unconditional)."""
        return self.decode(self.sample_tokens(labels, **kwargs))

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | os.PathLike) -> Path:
        from .saving import save

        return save(self, directory)

    save_pretrained = save

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Pipeline":
        from .saving import load

        model = load(directory, map_location=map_location)
        if not isinstance(model, cls):
            raise CheckpointError(f"{directory} holds a {type(model).__name__}, not a pipeline; build one with "
                                  "Pipeline.from_parts(tokenizer, generator) or `argen train`")
        return model

    from_pretrained = load


