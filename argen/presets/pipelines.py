"""Pipeline presets: a tokenizer preset + a class conditioner + a generator preset + sampling defaults.

`fmnist-raster-tiny` is the CPU recipe (Fashion-MNIST 28 px padded to 32 -> 8x8 VQ tokens -> tiny LlamaGen);
`imagenet-llamagen-*` pair LlamaGen's VQ-16 with the official GPT sizes at their published resolution and FID
sampling settings (top-k off, cfg 2.0 for B/L, 1.75 for XL/XXL, 1.65 for 3B), ready for converted weights.
The other families' pipelines sit with their generator presets and use `class_pipeline` from here.
"""
from __future__ import annotations

from typing import Any

from ..conditioning.labels import ClassConditionerConfig
from ..conditioning.text import TextConditionerConfig
from ..config import Config
from ..data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from ..pipeline import PipelineConfig
from ..types import SampleOptions
from . import get_config, preset


def text_pipeline(tokenizer: Config, generator: Config, *, encoder: str = "minilm", max_length: int = 16,
                  text_dim: int = 384, dropout: float = 0.1, **sampling: Any) -> PipelineConfig:
    """A text-conditional pipeline config: captions through a frozen encoder (offline MiniLM by default)."""
    conditioner = TextConditionerConfig(dim=generator.cond_dim, encoder=encoder, max_length=max_length,
                                        text_dim=text_dim, dropout=dropout)
    return PipelineConfig(tokenizer=tokenizer, conditioner=conditioner, generator=generator,
                          sampling=SampleOptions(**sampling))


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


# ----------------------------------------------------------------------------- text-to-image (emoji names as captions)

@preset("emoji-raster-t2i-tiny", "emoji text-to-image, raster: vq-tiny (32 px) + llamagen-tiny reading MiniLM caption "
                                 "features as 16 prefix tokens, cfg 3")
def emoji_raster_t2i_tiny() -> PipelineConfig:
    return text_pipeline(get_config("vq-tiny"), get_config("llamagen-tiny"), cfg=3.0, top_k=0)


@preset("emoji-var-t2i-tiny", "emoji text-to-image, next-scale: msvq-tiny + var-tiny conditioned on the pooled caption "
                              "(AdaLN), cfg 3 linear in scale")
def emoji_var_t2i_tiny() -> PipelineConfig:
    return text_pipeline(get_config("msvq-tiny"), get_config("var-tiny"), cfg=3.0, cfg_schedule="linear_scale", top_k=0)


@preset("emoji-maskgit-t2i-tiny", "emoji text-to-image, masked: vq-tiny + maskgit-tiny with the caption as prefix "
                                  "tokens, cfg 3 linear")
def emoji_maskgit_t2i_tiny() -> PipelineConfig:
    return text_pipeline(get_config("vq-tiny"), get_config("maskgit-tiny"), cfg=3.0, cfg_schedule="linear", top_k=0)


@preset("emoji-mar-t2i-tiny", "emoji text-to-image, MAR: vae-tiny (continuous) + mar-tiny with the pooled caption in "
                              "its buffers, cfg 3 linear")
def emoji_mar_t2i_tiny() -> PipelineConfig:
    return text_pipeline(get_config("vae-tiny"), get_config("mar-tiny"), cfg=3.0, cfg_schedule="linear")
