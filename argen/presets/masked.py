"""Masked (MaskGIT) generator presets: the published class-conditional model and a CPU-sized tiny one.

MaskGIT (https://arxiv.org/abs/2202.04200, `maskgit_class_cond_config.py`): a BERT-style transformer, 24 layers,
768 wide, 16 heads, MLP 3072, dropout 0.1, label smoothing 0.1, on a VQGAN's 16x16 tokens of 1024 codes (256 px),
1000 ImageNet classes (the conditioner's), decoded in 8 steps with the cosine schedule and choice temperature 4.5.
"""
from __future__ import annotations

from ..generators.masked import MaskedConfig
from . import get_config, preset
from .pipelines import FASHION_MNIST_CLASSES, class_pipeline


@preset("maskgit-b", "MaskGIT class-conditional transformer: 172M params, 24 layers, 768 wide, 16 heads, 16x16 tokens "
                     "of 1024 codes, 8 steps")
def maskgit_b() -> MaskedConfig:
    return MaskedConfig(vocab_size=1024, scales=((16, 16),), dim=768, depth=24, num_heads=16)


@preset("maskgit-tiny", "tiny masked generator for CPU tests: 64 wide, 2 layers, 256 codes, 8x8 tokens, 8 steps",
        tiny_for="masked")
def maskgit_tiny() -> MaskedConfig:
    return MaskedConfig(vocab_size=256, scales=((8, 8),), dim=64, depth=2, num_heads=4, dropout=0.0,
                        attn_dropout=0.0, num_steps=8)


@preset("fmnist-maskgit-tiny", "Fashion-MNIST class-conditional: vq-tiny tokenizer (32 px, 8x8) + maskgit-tiny, "
                               "cfg 2.0 ramped linearly over the known fraction")
def fmnist_maskgit_tiny():
    return class_pipeline(get_config("vq-tiny"), maskgit_tiny(), num_classes=10, class_names=FASHION_MNIST_CLASSES,
                          cfg=2.0, cfg_schedule="linear", top_k=0)
