"""Samplers: each paradigm's decoding process, one file each, beside the one loop (`argen.sampling.generate`).
Importing this package registers the sampler of every generator kind."""
from .base import DecodeOptions, Force, Sampler, State, register_sampler, sampler_for, sampler_kinds
from .mar import MAROptions, MARSampler
from .masked import MaskedOptions, MaskedSampler
from .next_scale import NextScaleOptions, NextScaleSampler
from .random_order import RandomOrderOptions, RandomOrderSampler
from .raster import RasterDiffusionOptions, RasterDiffusionSampler, RasterSampler

__all__ = ["DecodeOptions", "Force", "Sampler", "State", "register_sampler", "sampler_for", "sampler_kinds",
           "MAROptions", "MARSampler", "MaskedOptions", "MaskedSampler", "NextScaleOptions", "NextScaleSampler", "RandomOrderOptions", "RandomOrderSampler", "RasterSampler",
           "RasterDiffusionOptions", "RasterDiffusionSampler"]
