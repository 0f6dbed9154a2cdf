"""Tokenizers: images <-> tokens. Importing this package registers every tokenizer and quantizer kind.

See `base.py` for the contract (token shapes per layout) and the modules for each family.
"""
from __future__ import annotations

from . import quantizers  # noqa: F401  (registers vq, rvq, fsq, lfq, bsq, msvq)
from .autoencoder import Autoencoder, AutoencoderConfig
from .base import Tokenizer, TokenizerConfig, token_shape
from .pixel import PixelConfig, PixelTokenizer
from .vae import KLVAE, KLVAEConfig

__all__ = ["Tokenizer", "TokenizerConfig", "token_shape", "Autoencoder", "AutoencoderConfig", "KLVAE", "KLVAEConfig",
           "PixelTokenizer", "PixelConfig"]
