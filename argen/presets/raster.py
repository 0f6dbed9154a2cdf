"""Raster (next-token) generator presets: LlamaGen's official c2i sizes and a CPU-sized tiny model.

Official sizes (LlamaGen `GPT_models`, https://arxiv.org/abs/2406.06525): dim / layers / heads with SwiGLU
width 2/3*4*dim rounded to 256, 16384 codes, dropout 0.1 (the 1000 ImageNet classes are the conditioner's;
parameter counts below are the generator's, without the class table).
They keep LlamaGen's zero RoPE rows for the prefix (`prefix_rope="zero"`) so converted official weights
reproduce exactly. The grid is the published resolution (B at 16x16 = 256 px, the others at 24x24 =
384 px); `--set scales=[[16,16]]` selects the 256 px variants (weights are shape-identical).
"""
from __future__ import annotations

from ..generators.raster import RasterConfig
from . import preset


def _llamagen(dim: int, depth: int, heads: int, grid: int) -> RasterConfig:
    return RasterConfig(vocab_size=16384, scales=((grid, grid),), dim=dim, depth=depth, num_heads=heads,
                        prefix_rope="zero", embed_dropout=0.1, resid_dropout=0.1, ffn_dropout=0.1)


@preset("llamagen-b", "LlamaGen GPT-B c2i: 111M params, 768 wide, 12 layers, 16x16 tokens (256 px)")
def llamagen_b() -> RasterConfig:
    return _llamagen(768, 12, 12, 16)


@preset("llamagen-l", "LlamaGen GPT-L c2i: 343M params, 1024 wide, 24 layers, 24x24 tokens (384 px)")
def llamagen_l() -> RasterConfig:
    return _llamagen(1024, 24, 16, 24)


@preset("llamagen-xl", "LlamaGen GPT-XL c2i: 775M params, 1280 wide, 36 layers, 24x24 tokens (384 px)")
def llamagen_xl() -> RasterConfig:
    return _llamagen(1280, 36, 20, 24)


@preset("llamagen-xxl", "LlamaGen GPT-XXL c2i: 1.4B params, 1536 wide, 48 layers, 24x24 tokens (384 px)")
def llamagen_xxl() -> RasterConfig:
    return _llamagen(1536, 48, 24, 24)


@preset("llamagen-3b", "LlamaGen GPT-3B c2i: 3.1B params, 3200 wide, 24 layers, 32 heads of 100, 24x24 tokens")
def llamagen_3b() -> RasterConfig:
    return _llamagen(3200, 24, 32, 24)


@preset("llamagen-tiny", "tiny raster generator for CPU tests: 64 wide, 2 layers, 256 codes, 8x8 tokens",
        tiny_for="raster")
def llamagen_tiny() -> RasterConfig:
    return RasterConfig(vocab_size=256, scales=((8, 8),), dim=64, depth=2, num_heads=4, embed_dropout=0.0,
                        resid_dropout=0.0, ffn_dropout=0.0)
