"""Generators: the paradigms as siblings, one file each, sharing `base.Generator`'s contract.
Importing this package registers every generator kind."""
import importlib
import importlib.util

from .base import Generator, GeneratorConfig
from .raster import RasterConfig, RasterGenerator
from .random_order import RandomOrderConfig, RandomOrderGenerator
from .pixel import PixelGenerator, PixelGeneratorConfig

# Sibling paradigms are written in their own modules; import whichever exist.
for _name in ("pixel", "random_order", "masked", "next_scale", "mar"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["Generator", "GeneratorConfig", "RasterConfig", "RasterGenerator", "RandomOrderConfig",
           "RandomOrderGenerator", "PixelGenerator", "PixelGeneratorConfig"]
