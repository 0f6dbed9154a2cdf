"""Output heads: categorical (discrete tokens); a diffusion head for continuous tokens sits beside it."""
import importlib
import importlib.util

from .categorical import CategoricalHead

for _name in ("diffusion",):  # heads written by other modules register on import when present
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["CategoricalHead"]
