"""Pipeline presets: a tokenizer preset + a generator preset + sampling defaults.

`fmnist-raster-tiny` is the CPU recipe (Fashion-MNIST 28 px padded to 32 -> 8x8 VQ tokens -> tiny LlamaGen);
`imagenet-llamagen-*` pair LlamaGen's VQ-16 with the official GPT sizes at their published resolution and FID
sampling settings (top-k off, cfg 2.0 for B/L, 1.75 for XL/XXL, 1.65 for 3B), ready for converted weights.
"""
from __future__ import annotations

from ..pipeline import PipelineConfig
from . import get_config, preset

FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle boot")


@preset("fmnist-raster-tiny", "Fashion-MNIST class-conditional: vq-tiny tokenizer (32 px, 8x8) + llamagen-tiny")
def fmnist_raster_tiny() -> PipelineConfig:
    return PipelineConfig(tokenizer=get_config("vq-tiny"), generator=get_config("llamagen-tiny"),
                          class_names=FASHION_MNIST_CLASSES, cfg=2.0, top_k=0)


def _imagenet(generator: str, resolution: int, cfg: float) -> PipelineConfig:
    grid = resolution // 16
    tok = get_config("vq-f16-c16384")
    # attention sits at the lowest level, whose size taming counts from the nominal resolution
    tok = tok.replace(resolution=resolution, net=tok.net.replace(attn_resolutions=(grid,)))
    gen = get_config(generator).replace(scales=((grid, grid),))
    return PipelineConfig(tokenizer=tok, generator=gen, cfg=cfg, top_k=0)


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
