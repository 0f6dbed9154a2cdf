"""Generators: the paradigms as sibling networks, one file each, sharing `base.Generator`'s contract (their
sampling processes are in `argen.sampling.samplers`). Importing this package registers every generator kind."""
from .base import DiscreteGeneratorConfig, Generator, GeneratorConfig
from .mar import MARConfig, MARGenerator
from .masked import MaskedConfig, MaskedGenerator
from .next_scale import NextScaleConfig, NextScaleGenerator
from .pixel import PixelGenerator, PixelGeneratorConfig
from .random_order import RandomOrderConfig, RandomOrderGenerator
from .raster import RasterConfig, RasterGenerator
from .raster_diffusion import RasterDiffusionConfig, RasterDiffusionGenerator
from .task import GeneratorTask

__all__ = ["DiscreteGeneratorConfig", "Generator", "GeneratorConfig", "MARConfig", "MARGenerator", "MaskedConfig", "MaskedGenerator", "NextScaleConfig", "NextScaleGenerator", "PixelGenerator",
           "PixelGeneratorConfig", "RandomOrderConfig", "RandomOrderGenerator", "RasterConfig", "RasterGenerator", "RasterDiffusionConfig", "RasterDiffusionGenerator",
           "GeneratorTask"]
