"""MAR presets: the released MAR-B / L / H shapes (https://arxiv.org/abs/2406.11838, `mar_base/large/huge`) on
MAR's KL-16 tokens (16x16 x 16 dims at 256 px; the `vae-kl16` tokenizer preset) and a CPU-sized tiny model.

| preset | encoder + decoder blocks | width | heads | diffusion head | params (with the 1000-class table) |
|---|---|---|---|---|---|
| mar-b | 12 + 12 | 768  | 12 | 6 x 1024  | 207.9M |
| mar-l | 16 + 16 | 1024 | 16 | 8 x 1280  | 478.3M |
| mar-h | 20 + 20 | 1280 | 16 | 12 x 1536 | 942.4M |

All use 64 buffer positions, dropout 0.1 and `diffusion_batch_mul` 4 (the README's training command); the README's
evaluation samples with cfg 2.9 / 3.0 / 3.2 ("linear"), temperature 1.0, 100 diffusion steps and 64 or 256 AR steps.
`ar-diffusion-*` is the paper's causal comparison (Table 1, "AR": causal attention, raster order, Diffusion Loss) built
on the LlamaGen decoder (`argen/generators/raster_diffusion.py`); its shape here is argen's choice, not a released one.
"""
from __future__ import annotations

from ..generators.mar import MARConfig
from ..generators.raster_diffusion import RasterDiffusionConfig
from ..heads.diffusion import DiffusionHeadConfig
from . import get_config, preset
from .pipelines import FASHION_MNIST_CLASSES, class_pipeline


def _mar(dim: int, depth: int, heads: int, head_depth: int, head_width: int) -> MARConfig:
    return MARConfig(scales=((16, 16),), token_dim=16, dim=dim, encoder_depth=depth, decoder_depth=depth,
                     num_heads=heads, buffer_size=64,
                     head=DiffusionHeadConfig(token_dim=16, cond_dim=dim, depth=head_depth, width=head_width,
                                              batch_mul=4))


@preset("mar-b", "MAR-B: 208M params, 12+12 blocks, 768 wide, 6x1024 diffusion head, KL-16 16x16 tokens (256 px)")
def mar_b() -> MARConfig:
    return _mar(768, 12, 12, 6, 1024)


@preset("mar-l", "MAR-L: 478M params, 16+16 blocks, 1024 wide, 8x1280 diffusion head, KL-16 16x16 tokens (256 px)")
def mar_l() -> MARConfig:
    return _mar(1024, 16, 16, 8, 1280)


@preset("mar-h", "MAR-H: 942M params, 20+20 blocks, 1280 wide, 12x1536 diffusion head, KL-16 16x16 tokens (256 px)")
def mar_h() -> MARConfig:
    return _mar(1280, 20, 16, 12, 1536)


@preset("mar-tiny", "tiny MAR for CPU tests: 2+2 blocks, 64 wide, 4 buffers, 2x64 diffusion head, 8x8 tokens of 4 dims",
        tiny_for="mar")
def mar_tiny() -> MARConfig:
    return MARConfig(scales=((8, 8),), token_dim=4, dim=64, encoder_depth=2, decoder_depth=2, num_heads=4,
                     buffer_size=4, attn_dropout=0.0, proj_dropout=0.0, num_steps=8,
                     head=DiffusionHeadConfig(token_dim=4, cond_dim=64, depth=2, width=64, batch_mul=2,
                                              sampling_steps=20))


@preset("fmnist-mar-tiny", "Fashion-MNIST class-conditional MAR: vae-tiny (continuous 8x8x4 tokens, 32 px) + mar-tiny, "
                           "cfg 2.0 linear")
def fmnist_mar_tiny():
    return class_pipeline(get_config("vae-tiny"), mar_tiny(), num_classes=10, class_names=FASHION_MNIST_CLASSES,
                          cfg=2.0, cfg_schedule="linear")


def _imagenet_mar(generator: MARConfig, cfg: float):
    return class_pipeline(get_config("vae-kl16"), generator, num_classes=1000, cfg=cfg, cfg_schedule="linear")


@preset("imagenet-mar-b", "MAR's KL-16 + MAR-B, 256 px, the README's sampling (cfg 2.9 linear, temperature 1)")
def imagenet_mar_b():
    return _imagenet_mar(mar_b(), 2.9)


@preset("imagenet-mar-l", "MAR's KL-16 + MAR-L, 256 px, cfg 3.0 linear")
def imagenet_mar_l():
    return _imagenet_mar(mar_l(), 3.0)


@preset("imagenet-mar-h", "MAR's KL-16 + MAR-H, 256 px, cfg 3.2 linear")
def imagenet_mar_h():
    return _imagenet_mar(mar_h(), 3.2)


# ----------------------------------------------------------------------------- the causal variant (MAR's "AR")

@preset("ar-diffusion-b", "causal raster-order decoder over KL-16 latents with MAR-B's diffusion head (MAR's AR variant), 121M "
                          "params: GPT-B shape 768 x 12, 6x1024 head, 16x16 tokens of 16 dims (256 px)")
def ar_diffusion_b() -> RasterDiffusionConfig:
    return RasterDiffusionConfig(scales=((16, 16),), token_dim=16, dim=768, depth=12, num_heads=12,
                                 head=DiffusionHeadConfig(token_dim=16, cond_dim=768, depth=6, width=1024, batch_mul=4))


@preset("ar-diffusion-tiny", "tiny causal decoder + diffusion head for CPU tests: 64 wide, 2 layers, 2x64 head, 8x8 "
                             "tokens of 4 dims", tiny_for="raster-diffusion")
def ar_diffusion_tiny() -> RasterDiffusionConfig:
    return RasterDiffusionConfig(scales=((8, 8),), token_dim=4, dim=64, depth=2, num_heads=4, embed_dropout=0.0,
                                 resid_dropout=0.0, ffn_dropout=0.0,
                                 head=DiffusionHeadConfig(token_dim=4, cond_dim=64, depth=2, width=64, batch_mul=2,
                                                          sampling_steps=20))


@preset("fmnist-ar-diffusion-tiny", "Fashion-MNIST class-conditional causal AR over continuous tokens: vae-tiny + "
                                    "ar-diffusion-tiny, cfg 2.0 linear")
def fmnist_ar_diffusion_tiny():
    return class_pipeline(get_config("vae-tiny"), ar_diffusion_tiny(), num_classes=10,
                          class_names=FASHION_MNIST_CLASSES, cfg=2.0, cfg_schedule="linear")
