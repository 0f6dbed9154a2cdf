"""Random-order (RandAR) generator presets: the published sizes and a CPU-sized tiny model.

RandAR (https://arxiv.org/abs/2412.01827) reuses LlamaGen's GPT-L / XL / XXL decoders (0.3B / 0.7B / 1.4B) on
LlamaGen's VQ-16 tokens (16x16 grid at 256 px, 16384 codes, 1000 classes), with zero RoPE rows for the class
token (`prefix_rope="zero"`), and decodes the 256 tokens in 88 parallel steps by default.
"""
from __future__ import annotations

from ..config import Config
from ..generators.random_order import RandomOrderConfig
from . import get_config, preset
from .pipelines import FASHION_MNIST_CLASSES, class_pipeline


def _randar(dim: int, depth: int, heads: int) -> RandomOrderConfig:
    return RandomOrderConfig(vocab_size=16384, scales=((16, 16),), dim=dim, depth=depth, num_heads=heads,
                             prefix_rope="zero", embed_dropout=0.1, resid_dropout=0.1, ffn_dropout=0.1, num_steps=88,
                             sample_order="random")


@preset("randar-l", "RandAR-L c2i: 0.3B (GPT-L: 1024 wide, 24 layers), 16x16 tokens, random order, 88 steps")
def randar_l() -> RandomOrderConfig:
    return _randar(1024, 24, 16)


@preset("randar-xl", "RandAR-XL c2i: 0.7B (GPT-XL: 1280 wide, 36 layers), 16x16 tokens, random order, 88 steps")
def randar_xl() -> RandomOrderConfig:
    return _randar(1280, 36, 20)


@preset("randar-xxl", "RandAR-XXL c2i: 1.4B (GPT-XXL: 1536 wide, 48 layers), 16x16 tokens, random order, 88 steps")
def randar_xxl() -> RandomOrderConfig:
    return _randar(1536, 48, 24)


@preset("randar-tiny", "tiny random-order generator for CPU tests: 64 wide, 2 layers, 256 codes, 8x8 tokens, "
                       "24 parallel steps", tiny_for="random-order")
def randar_tiny() -> RandomOrderConfig:
    return RandomOrderConfig(vocab_size=256, scales=((8, 8),), dim=64, depth=2, num_heads=4, embed_dropout=0.0,
                             resid_dropout=0.0, ffn_dropout=0.0, num_steps=24)


@preset("fmnist-randar-tiny", "Fashion-MNIST class-conditional: vq-tiny tokenizer (32 px, 8x8) + randar-tiny, "
                              "cfg 2.0 ramped linearly over tokens")
def fmnist_randar_tiny() -> Config:
    return class_pipeline(get_config("vq-tiny"), get_config("randar-tiny"), num_classes=10,
                          class_names=FASHION_MNIST_CLASSES, cfg=2.0, cfg_schedule="linear", top_k=0)
