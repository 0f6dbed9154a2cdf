"""Named presets: functions returning configs (serializable, diffable).

Each family keeps its presets in its own module here (`presets/tokenizers.py`, `presets/raster.py`, ...)
and registers them with `@preset("name", "one-line description")`. Every family has a `-tiny` preset that
runs on CPU in seconds; tests use those, and a generator kind names its tiny preset with
`@preset(..., tiny_for="kind")` (the registry-driven contract tests fail for a kind without one).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..config import Config, apply_overrides
from ..errors import ConfigError

# The preset modules, imported explicitly (a missing or renamed module fails loudly).
PRESET_MODULES = ("tokenizers", "raster", "random_order", "pixel", "next_scale", "masked", "mar", "pipelines")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    make: Callable[[], Config]


_PRESETS: dict[str, Preset] = {}
_TINY: dict[str, str] = {}  # generator kind -> its tiny preset
_loaded = False


def preset(name: str, description: str = "", *, tiny_for: str | None = None
           ) -> Callable[[Callable[[], Config]], Callable[[], Config]]:
    def deco(fn: Callable[[], Config]) -> Callable[[], Config]:
        if name in _PRESETS and _PRESETS[name].make.__module__ != fn.__module__:
            raise RuntimeError(f"preset '{name}' is defined twice ({_PRESETS[name].make.__module__}, {fn.__module__})")
        _PRESETS[name] = Preset(name, description or (fn.__doc__ or "").strip().split("\n")[0], fn)
        if tiny_for is not None:
            if _TINY.get(tiny_for, name) != name:
                raise RuntimeError(f"kind '{tiny_for}' already has the tiny preset '{_TINY[tiny_for]}'")
            _TINY[tiny_for] = name
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in PRESET_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def list_presets() -> list[str]:
    _load_all()
    return sorted(_PRESETS)


def describe_presets() -> dict[str, str]:
    _load_all()
    return {n: _PRESETS[n].description for n in sorted(_PRESETS)}


def tiny_preset(kind: str) -> str:
    """The name of the tiny (CPU, seconds) preset of a registered kind; ConfigError if it has none."""
    _load_all()
    if kind not in _TINY:
        raise ConfigError(f"kind '{kind}' has no tiny preset; mark one with @preset(..., tiny_for='{kind}')")
    return _TINY[kind]


def get_config(name: str, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """The config of preset `name`, with dotted overrides applied and validated."""
    _load_all()
    if name not in _PRESETS:
        import difflib

        close = difflib.get_close_matches(name, _PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown preset '{name}'.{hint} See `argen presets` for the list.")
    cfg = _PRESETS[name].make()
    return apply_overrides(cfg, overrides) if overrides else cfg
