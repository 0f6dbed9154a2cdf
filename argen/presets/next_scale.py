"""Next-scale (VAR) generator presets: the released VAR sizes and a CPU-sized tiny model.

VAR's size rule (https://arxiv.org/abs/2404.02905, `build_vae_var`): depth d -> width 64 d, d heads of 64,
MLP ratio 4, drop-path 0.1 d / 24, 4096 codes of the VQVAE over 10 scales 1..16 (680 tokens, 256 px); the 1000
ImageNet classes (+ null) are the conditioner's. The AdaLN gate init follows the README commands (1e-3 for
d16/d20, 1e-4 d24, 1e-5 d30, 5e-6 d36). d36 is the 512 px model with shared AdaLN over scales 1..32 (2240
tokens); it reuses the same VQVAE checkpoint with those scales (`--set tokenizer.quantizer.scales=...` on the
tokenizer side). Parameter counts (without the 0.17M-parameter quantizer, which is the tokenizer's, and the
class table): d16 309.26M, d20 599.64M, d24 1031.86M, d30 2008.10M, d36 2351.59M.
"""
from __future__ import annotations

import math

from ..config import Config
from ..generators.next_scale import NextScaleConfig
from ..tokenizers.quantizers.msvq import VAR_SCALES_256, VAR_SCALES_512, MSVQConfig
from . import get_config, preset
from .pipelines import FASHION_MNIST_CLASSES, class_pipeline


def _var(depth: int, gamma: float, scales=VAR_SCALES_256, shared_adaln: bool = False) -> NextScaleConfig:
    return NextScaleConfig(vocab_size=4096, scales=scales, depth=depth, shared_adaln=shared_adaln,
                           quantizer=MSVQConfig(dim=32, codebook_size=4096, scales=scales), init_adaln_gamma=gamma)


def var_class_init(generator: NextScaleConfig) -> float:
    """VAR's init std of the class embedding: sqrt(1 / (3 width))."""
    return math.sqrt(1 / (3 * generator.width))


@preset("var-d16", "VAR-d16 next-scale transformer: 310M params, 1024 wide, 16 layers, 10 scales (256 px)")
def var_d16() -> Config:
    return _var(16, 1e-3)


@preset("var-d20", "VAR-d20 next-scale transformer: 601M params, 1280 wide, 20 layers, 10 scales (256 px)")
def var_d20() -> Config:
    return _var(20, 1e-3)


@preset("var-d24", "VAR-d24 next-scale transformer: 1.03B params, 1536 wide, 24 layers, 10 scales (256 px)")
def var_d24() -> Config:
    return _var(24, 1e-4)


@preset("var-d30", "VAR-d30 next-scale transformer: 2.0B params, 1920 wide, 30 layers, 10 scales (256 px)")
def var_d30() -> Config:
    return _var(30, 1e-5)


@preset("var-d36", "VAR-d36 (512 px): 2.35B params, 2304 wide, 36 layers, shared AdaLN, scales 1..32 (2240 tokens)")
def var_d36() -> Config:
    return _var(36, 5e-6, scales=VAR_SCALES_512, shared_adaln=True)


@preset("var-tiny", "tiny next-scale generator for CPU: 128 wide, 3 layers, 4 heads, 256 codes, scales 1,2,4,8",
        tiny_for="next-scale")
def var_tiny() -> Config:
    q = get_config("msvq-tiny").quantizer
    return NextScaleConfig(vocab_size=q.codebook_size, scales=q.scales, depth=3, dim=128, num_heads=4, quantizer=q,
                           init_adaln_gamma=1e-3, drop_path=0.0)


# ----------------------------------------------------------------------------- pipelines (tokenizer + generator)

@preset("fmnist-var-tiny", "Fashion-MNIST class-conditional next-scale: msvq-tiny (32 px, scales 1,2,4,8) + var-tiny")
def fmnist_var_tiny() -> Config:
    gen = var_tiny()
    return class_pipeline(get_config("msvq-tiny"), gen, num_classes=10, class_names=FASHION_MNIST_CLASSES,
                          init_std=var_class_init(gen), cfg=2.0, cfg_schedule="linear_scale", top_k=0)


def _imagenet_var(generator: NextScaleConfig, scales=VAR_SCALES_256) -> Config:
    tok = get_config("msvq-f16-c4096")
    side = scales[-1][0]
    tok = tok.replace(resolution=16 * side, net=tok.net.replace(attn_resolutions=(side,)),
                      quantizer=tok.quantizer.replace(scales=scales))
    # VAR's FID protocol: cfg 1.5 (argen 2.5, linear in the scale index), top-k 900, top-p 0.96
    return class_pipeline(tok, generator, num_classes=1000, init_std=var_class_init(generator), cfg=2.5,
                          cfg_schedule="linear_scale", top_k=900, top_p=0.96)


@preset("imagenet-var-d16", "VAR VQVAE + VAR-d16, 256 px, VAR's FID sampling (cfg 1.5 linear in scale, top-k 900, top-p 0.96)")
def imagenet_var_d16() -> Config:
    return _imagenet_var(var_d16())


@preset("imagenet-var-d20", "VAR VQVAE + VAR-d20, 256 px, VAR's FID sampling")
def imagenet_var_d20() -> Config:
    return _imagenet_var(var_d20())


@preset("imagenet-var-d24", "VAR VQVAE + VAR-d24, 256 px, VAR's FID sampling")
def imagenet_var_d24() -> Config:
    return _imagenet_var(var_d24())


@preset("imagenet-var-d30", "VAR VQVAE + VAR-d30, 256 px, VAR's FID sampling")
def imagenet_var_d30() -> Config:
    return _imagenet_var(var_d30())


@preset("imagenet-var-d36", "VAR VQVAE + VAR-d36 (shared AdaLN), 512 px, scales 1..32, VAR's FID sampling")
def imagenet_var_d36() -> Config:
    return _imagenet_var(var_d36(), VAR_SCALES_512)
