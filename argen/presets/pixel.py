"""Pixel-level (ImageGPT-style) generator presets. Generator presets are named `pixel-ar-*` because
`pixel-tiny` is the pixel identity tokenizer's preset.
"""
from __future__ import annotations

from ..config import Config
from ..generators.pixel import PixelGeneratorConfig
from . import get_config, preset
from .pipelines import FASHION_MNIST_CLASSES, class_pipeline


@preset("pixel-ar-tiny", "tiny sub-pixel AR generator for CPU tests: 64 wide, 2 layers, 8x8 RGB images "
                         "(192 tokens of 256 values)", tiny_for="pixel-ar")
def pixel_ar_tiny() -> PixelGeneratorConfig:
    return PixelGeneratorConfig(vocab_size=256, scales=((8, 8),), dim=64, depth=2, num_heads=4, embed_dropout=0.0,
                                resid_dropout=0.0, ffn_dropout=0.0)


@preset("fmnist-pixel-tiny", "Fashion-MNIST class-conditional at 16 px: pixel identity tokenizer (8-bit "
                             "sub-pixels) + pixel-ar-tiny on a 16x16 grid (768 tokens)")
def fmnist_pixel_tiny() -> Config:
    tokenizer = get_config("pixel-tiny").replace(resolution=16)
    generator = get_config("pixel-ar-tiny").replace(scales=((16, 16),))
    return class_pipeline(tokenizer, generator, num_classes=10, class_names=FASHION_MNIST_CLASSES, cfg=1.0, top_k=0)
