"""Output heads: categorical (discrete tokens); a diffusion head for continuous tokens sits beside it."""
from .categorical import CategoricalHead

__all__ = ["CategoricalHead"]
