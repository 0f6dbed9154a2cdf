"""Pipeline presets: a tokenizer preset + a class conditioner + a generator preset + sampling defaults.

`fmnist-raster-tiny` is the CPU recipe (Fashion-MNIST 28 px padded to 32 -> 8x8 VQ tokens -> tiny LlamaGen);
`imagenet-llamagen-*` pair LlamaGen's VQ-16 with the official GPT sizes at their published resolution and FID
sampling settings (top-k off, cfg 2.0 for B/L, 1.75 for XL/XXL, 1.65 for 3B), ready for converted weights.
The other families' pipelines sit with their generator presets and use `class_pipeline` from here.
"""
from __future__ import annotations

from typing import Any

from ..conditioning.labels import ClassConditionerConfig
from ..config import Config
from ..data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from ..pipeline import PipelineConfig
from ..types import SampleOptions
from . import get_config, preset


def class_pipeline(tokenizer: Config, generator: Config, *, num_classes: int, class_names=(), dropout: float = 0.1,
                   init_std: float = 0.02, **sampling: Any) -> PipelineConfig:
    """A class-conditional pipeline config (the conditioner's width follows the generator's)."""
    conditioner = ClassConditionerConfig(dim=generator.cond_dim, num_classes=num_classes,
                                         class_names=tuple(class_names), dropout=dropout, init_std=init_std)
    return PipelineConfig(tokenizer=tokenizer, conditioner=conditioner, generator=generator,
                          sampling=SampleOptions(**sampling))


@preset("fmnist-raster-tiny", "Fashion-MNIST class-conditional: vq-tiny tokenizer (32 px, 8x8) + llamagen-tiny")
def fmnist_raster_tiny() -> PipelineConfig:
    return class_pipeline(get_config("vq-tiny"), get_config("llamagen-tiny"), num_classes=10,
                          class_names=FASHION_MNIST_CLASSES, cfg=2.0, top_k=0)


def _imagenet(generator: str, resolution: int, cfg: float) -> PipelineConfig:
    grid = resolution // 16
    tok = get_config("vq-f16-c16384")
    # attention sits at the lowest level, whose size taming counts from the nominal resolution
    tok = tok.replace(resolution=resolution, net=tok.net.replace(attn_resolutions=(grid,)))
    gen = get_config(generator).replace(scales=((grid, grid),))
    return class_pipeline(tok, gen, num_classes=1000, cfg=cfg, top_k=0)


@preset("imagenet-llamagen-b", "LlamaGen VQ-16 + GPT-B, 256 px (16x16 tokens), cfg 2.0")
def imagenet_llamagen_b() -> PipelineConfig:
    return _imagenet("llamagen-b", 256, 2.0)


@preset("imagenet-llamagen-l", "LlamaGen VQ-16 + GPT-L, 384 px (24x24 tokens), cfg 2.0")
def imagenet_llamagen_l() -> PipelineConfig:
    return _imagenet("llamagen-l", 384, 2.0)


@preset("imagenet-llamagen-xl", "LlamaGen VQ-16 + GPT-XL, 384 px (24x24 tokens), cfg 1.75")
def imagenet_llamagen_xl() -> PipelineConfig:
    return _imagenet("llamagen-xl", 384, 1.75)


@preset("imagenet-llamagen-xxl", "LlamaGen VQ-16 + GPT-XXL, 384 px (24x24 tokens), cfg 1.75")
def imagenet_llamagen_xxl() -> PipelineConfig:
    return _imagenet("llamagen-xxl", 384, 1.75)


@preset("imagenet-llamagen-3b", "LlamaGen VQ-16 + GPT-3B, 384 px (24x24 tokens), cfg 1.65")
def imagenet_llamagen_3b() -> PipelineConfig:
    return _imagenet("llamagen-3b", 384, 1.65)
