"""Output heads: categorical (discrete tokens); a diffusion head for continuous tokens sits beside it."""
from .categorical import CategoricalHead
from .diffusion import DiffusionHead, DiffusionHeadConfig

__all__ = ["CategoricalHead", "DiffusionHead", "DiffusionHeadConfig"]
