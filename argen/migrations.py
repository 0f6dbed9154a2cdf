"""Config-version migrations: a directory written by an older argen is brought up to `CONFIG_VERSION` in
memory when it is loaded (the files are left as they are; save again to write the current layout).

A migration step `@migration(v)` turns an *assembled* version-v model into version v + 1: `meta` is the
config.json dict whose "config" holds the whole nested config (component folders already merged), `state`
the full state dict (component keys prefixed by the component's name). Steps never guess: anything they
cannot carry over faithfully is refused with a CheckpointError that says what to do.

A saved config is read strictly (`from_dict(require_all=True)`): a field absent from the file is an error,
never today's default. So a field added to a config class needs a new CONFIG_VERSION and a step here that
writes the value the older version behaved as if it had, explicitly.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from .config import CONFIG_VERSION
from .errors import CheckpointError, ConfigError

Step = Callable[[dict[str, Any], dict[str, Tensor], str], tuple[dict[str, Any], dict[str, Tensor]]]
MIGRATIONS: dict[int, Step] = {}


def migration(version: int) -> Callable[[Step], Step]:
    """Register the step from `version` to `version + 1`."""

    def deco(fn: Step) -> Step:
        if version in MIGRATIONS:
            raise RuntimeError(f"two migrations from config version {version}")
        MIGRATIONS[version] = fn
        return fn

    return deco


def migrate(meta: dict[str, Any], state: dict[str, Tensor], source: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Apply every step from the saved version to CONFIG_VERSION."""
    version = int(meta.get("version", 1))
    if version > CONFIG_VERSION:
        raise CheckpointError(f"{source} has config version {version}, newer than this argen ({CONFIG_VERSION}); "
                              "upgrade argen")
    while version < CONFIG_VERSION:
        if version not in MIGRATIONS:
            raise CheckpointError(f"{source} has config version {version}, which this argen cannot read "
                                  f"(no migration from {version}); re-save it with the argen that wrote it")
        meta, state = MIGRATIONS[version](meta, state, source)
        version += 1
        meta = {**meta, "version": version}
    return meta, state


# ----------------------------------------------------------------------------- 1 -> 2

_V1_GENERATORS = ("raster", "random-order", "pixel-ar", "next-scale")
_V1_SAMPLING = ("cfg", "cfg_schedule", "temperature", "top_k", "top_p")
_V1_CLASS_TABLES = ("cls_embedding.embedding_table.weight", "class_emb.embedding_table.weight")


def _generator_width(gen: dict[str, Any]) -> int:
    if gen.get("kind") == "next-scale":
        return int(gen["dim"]) if gen.get("dim") is not None else 64 * int(gen.get("depth", 16))
    return int(gen.get("dim", 768))


def _class_init_std(gen: dict[str, Any]) -> float:
    """The std version 1 initialised the class table with, inside the generator: its `init_std` (LlamaGen
    0.02), for next-scale None meaning VAR's sqrt(1 / (3 width))."""
    std = gen.get("init_std", None if gen.get("kind") == "next-scale" else 0.02)
    return float(std) if std is not None else math.sqrt(1 / (3 * _generator_width(gen)))


@migration(1)
def _split_class_conditioning(meta, state, source):
    """Version 2 moved class conditioning out of the generators into a conditioner, and the pipeline's
    sampling defaults into `sampling`; next-scale generators share the tokenizer's quantizer instead of
    holding a copy; a tokenizer's training resolution is its config's `resolution`. The fields new in version
    2 (the conditioner's `init_std`, `sampling.cfg_interval`) get the values version 1 behaved as."""
    kind = meta["kind"]
    if kind in _V1_GENERATORS:
        raise CheckpointError(f"{source} is a {kind} generator saved alone by argen 0.1 (config version 1): its "
                              "class embedding now belongs to a conditioner, which a lone generator cannot carry. "
                              "Load it with argen 0.1 and save it as a pipeline (tokenizer + generator), which "
                              "this argen migrates")
    if kind != "pipeline":
        # A tokenizer trained at another size recorded it beside its config; version 2 keeps it in the config,
        # with the same network (conv attention at the same levels: TokenizerConfig.resized).
        res = meta.get("extra", {}).get("train_resolution")
        config = meta["config"]
        if res is not None and "resolution" in config and res != config["resolution"]:
            attn = (config.get("net") or {}).get("attn_resolutions")
            if attn and any(a * res % config["resolution"] for a in attn):
                return meta, state  # not expressible: keep the nominal size, as version 1 built it
            config = {**config, "resolution": res}
            if attn:
                config["net"] = {**config["net"], "attn_resolutions": [a * res // meta["config"]["resolution"]
                                                                       for a in attn]}
            meta = {**meta, "config": config}
        return meta, state  # otherwise tokenizers, quantizers, feature nets are unchanged
    config = dict(meta["config"])
    gen = dict(config.pop("generator"))
    num_classes = gen.pop("num_classes", 1000)
    dropout = gen.pop("class_dropout", 0.1)
    conditioner = {"kind": "class", "dim": _generator_width(gen), "dropout": dropout, "num_classes": num_classes,
                   "class_names": list(config.pop("class_names", [])), "init_std": _class_init_std(gen)}
    # Version 1 pipelines had no guidance interval: guidance on every step.
    sampling = {"cfg_interval": [0.0, 1.0], **{k: config.pop(k) for k in _V1_SAMPLING if k in config}}
    config = {"tokenizer": config.pop("tokenizer"), "conditioner": conditioner, "generator": gen,
              "sampling": sampling, **config}
    state = dict(state)
    for name in _V1_CLASS_TABLES:
        if f"generator.{name}" in state:
            state["conditioner.embedding_table.weight"] = state.pop(f"generator.{name}")
    if gen.get("kind") == "next-scale":  # the generator's copy of the quantizer: now the tokenizer's own
        for key in [k for k in state if k.startswith("generator.quantizer.")]:
            twin = "tokenizer." + key[len("generator."):]
            copy = state.pop(key)
            if twin in state and not torch.equal(copy, state[twin].to(copy.dtype)):
                raise CheckpointError(f"{source}: the generator's copy of the quantizer ({key}) differs from the "
                                      f"tokenizer's ({twin}); version 2 keeps one, so this pipeline cannot be "
                                      "migrated without changing its samples. Re-save it with argen 0.1 after "
                                      "re-binding the generator to the tokenizer")
    return {**meta, "config": config}, state


# ----------------------------------------------------------------------------- 2 -> 3

@migration(2)
def _raster_cond_mode(meta, state, source):
    """Version 3 lets a raster generator read its condition by cross-attention or AdaLN (`cond_mode`); every
    version-2 raster generator read it as a prefix."""
    config = meta["config"]
    if meta["kind"] == "raster":
        return {**meta, "config": {"cond_mode": "prefix", **config}}, state
    gen = config.get("generator") if meta["kind"] == "pipeline" else None
    if isinstance(gen, dict) and gen.get("kind") == "raster":
        return {**meta, "config": {**config, "generator": {"cond_mode": "prefix", **gen}}}, state
    return meta, state


# ----------------------------------------------------------------------------- 3 -> 4

def _is_tokenizer(kind: str) -> bool:
    from . import registry
    from .tokenizers.base import TokenizerConfig

    try:
        return issubclass(registry.config_class(kind), TokenizerConfig)
    except ConfigError:  # an unknown kind is reported by the loader, with the list of known ones
        return False


@migration(3)
def _tokenizer_channels(meta, state, source):
    """Version 4 records whether a tokenizer decodes greyscale images (`channels`); every version-3 tokenizer
    decoded three independent channels."""
    config = meta["config"]
    if _is_tokenizer(meta["kind"]):
        return {**meta, "config": {"channels": 3, **config}}, state
    tok = config.get("tokenizer") if meta["kind"] == "pipeline" else None
    if isinstance(tok, dict):
        return {**meta, "config": {**config, "tokenizer": {"channels": 3, **tok}}}, state
    return meta, state


# ----------------------------------------------------------------------------- 4 -> 5

_DIFFUSION_HEAD_GENERATORS = ("mar", "raster-diffusion")


@migration(4)
def _diffusion_head_x0_clip(meta, state, source):
    """Version 5 lets a diffusion head clamp its predicted clean token (`head.x0_clip`); every version-4 head
    sampled unclipped."""
    config = meta["config"]
    if meta["kind"] in _DIFFUSION_HEAD_GENERATORS:
        return {**meta, "config": {**config, "head": {"x0_clip": None, **config["head"]}}}, state
    gen = config.get("generator") if meta["kind"] == "pipeline" else None
    if isinstance(gen, dict) and gen.get("kind") in _DIFFUSION_HEAD_GENERATORS and isinstance(gen.get("head"), dict):
        gen = {**gen, "head": {"x0_clip": None, **gen["head"]}}
        return {**meta, "config": {**config, "generator": gen}}, state
    return meta, state
