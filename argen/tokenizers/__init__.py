"""Tokenizers: images <-> tokens. Importing this package registers every tokenizer and quantizer kind.

See `base.py` for the contract (token shapes per layout) and the modules for each family.
"""
from __future__ import annotations

import importlib
import importlib.util

from .base import Tokenizer, TokenizerConfig, token_shape

# Modules that register kinds on import. Imported by name so a module still being written elsewhere in
# the tree does not break `import argen.tokenizers`.
_MODULES = ("quantizers", "autoencoder", "vae", "pixel")
for _name in _MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["Tokenizer", "TokenizerConfig", "token_shape"]
