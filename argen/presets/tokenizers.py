"""Tokenizer presets: the published shapes (LlamaGen VQ-16/VQ-8, VAR's VQVAE, MAR's KL-16) and `-tiny`
CPU presets for every family.

Tiny presets are sized for 28-64 px images on a CPU: a 0.3M-parameter f4 conv autoencoder (32 px -> an
8x8 token grid; train Fashion-MNIST at 32 px, its 28 px images zero-padded) and 8 bits per token position
for every discrete family (VQ 256 codes, RVQ 2 x 16, FSQ 4^4, LFQ/BSQ 8 bits, multi-scale VQ 256 codes over
scales 1, 2, 4, 8), so reconstructions can be compared at a matched token budget. Any size that is a
multiple of the downsampling factor works at training time (`argen tokenizer train --resolution`).
"""
from __future__ import annotations

from ..config import Config
from ..nn.conv import ConvNetConfig
from ..tokenizers.quantizers.msvq import VAR_SCALES_256
from . import preset


def _quantizer(kind: str, **fields) -> Config:
    # Looked up by name so this module imports without the quantizer modules (lazy registry).
    from .. import registry

    return registry.config_class(kind)(**fields)


def _autoencoder(**fields) -> Config:
    from ..tokenizers.autoencoder import AutoencoderConfig

    return AutoencoderConfig(**fields)


# ----------------------------------------------------------------------------- published shapes


@preset("vq-f16-c16384", "LlamaGen VQ-16: f16 conv VQGAN, 16384 l2-normalised 8-d codes, 256 px -> 16x16 tokens")
def vq_f16_c16384() -> Config:
    return _autoencoder(resolution=256, net=ConvNetConfig(), quant_conv_kernel=1,
                        quantizer=_quantizer("vq", dim=8, codebook_size=16384, metric="cosine", beta=0.25))


@preset("vq-f8-c16384", "LlamaGen VQ-8: f8 conv VQGAN, 16384 l2-normalised 8-d codes, 256 px -> 32x32 tokens")
def vq_f8_c16384() -> Config:
    return _autoencoder(resolution=256, net=ConvNetConfig(ch_mult=(1, 2, 2, 4), attn_resolutions=(32,)),
                        quant_conv_kernel=1,
                        quantizer=_quantizer("vq", dim=8, codebook_size=16384, metric="cosine", beta=0.25))


@preset("msvq-f16-c4096", "VAR's VQVAE: f16 conv, width 160, 4096 x 32 codebook shared by 10 scales 1..16 (680 tokens)")
def msvq_f16_c4096() -> Config:
    return _autoencoder(resolution=256, net=ConvNetConfig(ch=160, z_channels=32), quant_conv_kernel=3,
                        quantizer=_quantizer("msvq", dim=32, codebook_size=4096, scales=VAR_SCALES_256))


@preset("vae-kl16", "MAR's KL-16: LDM KL autoencoder, f16, 16 latent channels, scale factor 0.2325")
def vae_kl16() -> Config:
    from ..tokenizers.vae import KLVAEConfig

    return KLVAEConfig(resolution=256)


# ----------------------------------------------------------------------------- tiny CPU presets

TINY_NET = ConvNetConfig(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=16,
                         norm_groups=8)
TINY_RESOLUTION = 32


def _tiny(quantizer: Config) -> Config:
    return _autoencoder(resolution=TINY_RESOLUTION, net=TINY_NET, quantizer=quantizer)


@preset("vq-tiny", "tiny f4 VQ tokenizer: 256 l2-normalised 8-d codes, k-means init, EMA, dead-code restarts; 32 px")
def vq_tiny() -> Config:
    return _tiny(_quantizer("vq", dim=8, codebook_size=256, metric="cosine", kmeans_iters=10, ema_decay=0.99,
                                dead_after=20))


@preset("rvq-tiny", "tiny f4 residual-VQ tokenizer: depth 2 x 16 codes (8 bits per position); 32 px -> 8x8x2")
def rvq_tiny() -> Config:
    return _tiny(_quantizer("rvq", dim=8, depth=2, codebook_size=16, kmeans_iters=10, ema_decay=0.99, dead_after=20))


@preset("fsq-tiny", "tiny f4 FSQ tokenizer: levels 8,6,5 (240 codes, the FSQ paper's ~2^8 choice), symmetric levels, "
                    "actnorm init; 32 px -> 8x8")
def fsq_tiny() -> Config:
    # Levels (8, 6, 5) are the FSQ paper's recommendation for ~2^8 codes (Table 1 of arXiv:2309.15505). With the
    # paper's even-L layout and a fresh encoder's small output scale, (4, 4, 4, 4) used 55% / 61% of its grid after
    # 60 CPU-s (benchmarks/reconstruction.py, Fashion-MNIST / emoji); symmetric levels + actnorm raise that to
    # 89% / 96%, and (8, 6, 5) with both to 99% / 100%.
    return _tiny(_quantizer("fsq", dim=3, levels=(8, 6, 5), symmetric=True, actnorm=True))


@preset("lfq-tiny", "tiny f4 LFQ tokenizer: 8 sign bits (256 codes) with entropy penalty; 32 px -> 8x8")
def lfq_tiny() -> Config:
    return _tiny(_quantizer("lfq", dim=8, bits=8))


@preset("bsq-tiny", "tiny f4 BSQ tokenizer: 8 bits on the unit sphere (256 codes); 32 px -> 8x8")
def bsq_tiny() -> Config:
    return _tiny(_quantizer("bsq", dim=8, bits=8))


@preset("msvq-tiny", "tiny f4 multi-scale VQ (VAR-style): 256 codes shared by scales 1,2,4,8 (85 tokens), "
                     "dead-code restarts; 32 px")
def msvq_tiny() -> Config:
    # dead_after=20: without restarts a short CPU run uses ~7% of the codes (measured: 6.6% vs 84% batch usage
    # after 150 steps on Fashion-MNIST); VAR's own preset keeps the official behaviour (no restarts).
    return _tiny(_quantizer("msvq", dim=8, codebook_size=256, scales=((1, 1), (2, 2), (4, 4), (8, 8)), dead_after=20))


@preset("vae-tiny", "tiny f4 KL-VAE (continuous, 4 channels per token); 32 px -> 8x8x4")
def vae_tiny() -> Config:
    from ..tokenizers.vae import KLVAEConfig

    return KLVAEConfig(resolution=TINY_RESOLUTION, net=TINY_NET.replace(z_channels=4, decoder_attn=False),
                       embed_dim=4, scale_factor=1.0)


@preset("pixel-tiny", "pixel identity tokenizer: 8-bit sub-pixels as tokens (vocab 256, 3 per position); 32 px")
def pixel_tiny() -> Config:
    from ..tokenizers.pixel import PixelConfig

    return PixelConfig(resolution=TINY_RESOLUTION, bits=8)
