"""argen: autoregressive visual generation from small shared parts.

Public surface: `create`, `load`, `save`, `list_presets`, `generate`, `Pipeline`, and the recipes
`train_tokenizer` / `train_generator`.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def create(preset: str, **overrides: Any):
    """Build a fresh (randomly initialised) model from a named preset.

    Overrides use dotted keys: `argen.create("llamagen-tiny", **{"generator.depth": 4})`.
    """
    from . import registry
    from .presets import get_config

    return registry.build(get_config(preset, overrides or None))


def load(directory, map_location="cpu", *, verify: bool = True):
    """Load a model or pipeline saved by `argen.save` / `model.save_pretrained` from a local directory.
    `verify=False` skips the weights' checksum and the finite-values check (faster for big models)."""
    from .saving import load as _load

    return _load(directory, map_location=map_location, verify=verify)


def save(model, directory):
    """Save a registry-built model as `config.json` + `model.safetensors` in `directory`."""
    from .saving import save as _save

    return _save(model, directory)


def list_presets() -> list[str]:
    from .presets import list_presets as _list

    return _list()


# Heavier pieces are imported on first use so `import argen` stays fast.
_LAZY = {"generate": ("sampling.loop", "generate"), "Pipeline": ("pipeline", "Pipeline"),
         "train_tokenizer": ("train.recipes", "train_tokenizer"), "train_generator": ("train.recipes", "train_generator")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module 'argen' has no attribute '{name}'")


__all__ = ["create", "load", "save", "list_presets", "generate", "Pipeline", "train_tokenizer", "train_generator",
           "__version__"]
