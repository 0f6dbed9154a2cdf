"""Quantizers: one contract (`forward(z) -> QuantOutput`, `lookup(ids) -> z_q`) for every kind.

Importing this package registers every quantizer kind (see `argen.registry.names(QuantizerConfig)`):
vq, rvq, fsq, lfq, bsq, msvq.
"""
from __future__ import annotations

from .base import Quantizer, QuantizerConfig
from .fsq import FiniteScalarQuantizer, FSQConfig
from .lfq import BinarySphericalQuantizer, BSQConfig, LFQConfig, LookupFreeQuantizer
from .msvq import MSVQConfig, MultiScaleVectorQuantizer
from .rvq import ResidualVectorQuantizer, RVQConfig
from .vq import VectorQuantizer, VQConfig

__all__ = ["Quantizer", "QuantizerConfig", "VQConfig", "VectorQuantizer", "RVQConfig", "ResidualVectorQuantizer",
           "FSQConfig", "FiniteScalarQuantizer", "LFQConfig", "LookupFreeQuantizer", "BSQConfig",
           "BinarySphericalQuantizer", "MSVQConfig", "MultiScaleVectorQuantizer"]
