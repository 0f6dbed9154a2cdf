"""Quantizers: one contract (`forward(z) -> QuantOutput`, `lookup(ids) -> z_q`) for every kind.

Importing this package registers every quantizer kind (see `argen.registry.names(QuantizerConfig)`).
"""
from __future__ import annotations

import importlib
import importlib.util

from .base import Quantizer, QuantizerConfig

# Modules that register kinds on import (imported by name so a module still being written does not break imports).
_MODULES = ("vq", "rvq", "fsq", "lfq", "msvq")
for _name in _MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["Quantizer", "QuantizerConfig"]
