"""Registry of buildable kinds: name -> (ConfigCls, Cls). Tests iterate it (timm style).

    @register("vq", VQConfig)
    class VectorQuantizer(nn.Module):
        def __init__(self, config: VQConfig): ...

    build(VQConfig(codebook_size=512))  # -> VectorQuantizer

This module imports nothing of argen's but the error types, so `config.py` can depend on it without a cycle.
The component packages register their kinds when imported; `load_components` imports them by name (an
explicit list: a renamed or missing package fails loudly here, it is never probed for).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

_REGISTRY: dict[str, tuple[type, type]] = {}

# Packages whose modules register kinds on import, in data-flow order. Imported on first use of the registry
# (not by `import argen`, which stays cheap for the CLI's start-up).
COMPONENT_PACKAGES = (
    "argen.tokenizers",
    "argen.conditioning",
    "argen.heads",
    "argen.generators",
    "argen.metrics.features",
    "argen.pipeline",
)
_loaded = False


def register(kind: str, config_cls: type["Config"]) -> Callable[[type], type]:
    """Class decorator: make `config_cls` buildable into the decorated class under `kind`."""

    def deco(cls: type) -> type:
        prev = _REGISTRY.get(kind)
        if prev is not None and (prev[1].__qualname__, prev[1].__module__) != (cls.__qualname__, cls.__module__):
            raise RuntimeError(f"kind '{kind}' is already registered to {prev[1].__module__}.{prev[1].__qualname__}")
        if config_cls.__dict__.get("kind") not in ("", None, kind):
            raise RuntimeError(f"{config_cls.__name__} is already registered as '{config_cls.kind}'")
        config_cls.kind = kind
        cls.config_class = config_cls
        _REGISTRY[kind] = (config_cls, cls)
        return cls

    return deco


def load_components() -> None:
    """Import every component package so its kinds are registered (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg in COMPONENT_PACKAGES:
        importlib.import_module(pkg)


def build(cfg: "Config", **kwargs: Any) -> Any:
    """Instantiate the class registered for this config's kind."""
    load_components()
    kind = type(cfg).kind
    if kind not in _REGISTRY:
        raise ConfigError(f"{type(cfg).__name__} is not registered; registered kinds: {', '.join(names())}")
    return _REGISTRY[kind][1](cfg, **kwargs)


def config_class(kind: str) -> type["Config"]:
    load_components()
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown kind '{kind}'; registered kinds: {', '.join(names())}")
    return _REGISTRY[kind][0]


def component_class(kind: str) -> type:
    config_class(kind)
    return _REGISTRY[kind][1]


def names(base: type | None = None) -> list[str]:
    """Registered kinds, optionally only those whose config subclasses `base`."""
    load_components()
    return sorted(k for k, (c, _) in _REGISTRY.items() if base is None or issubclass(c, base))
