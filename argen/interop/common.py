"""Shared pieces of the official-checkpoint converters (LlamaGen, VAR, MAR, taming).

Every converter follows the same three steps:

1. `read_checkpoint(path)`: open a `.pt`/`.pth`/`.safetensors` file safely. Pickles are opened with
   `torch.load(weights_only=True)`, which refuses arbitrary objects; a converter that truly needs a
   few more globals (MAR's argparse Namespace) passes exactly those in `allow_globals`.
2. `unwrap(obj, containers)`: find the state dict inside the training container (`{"model": sd}`,
   `{"module": sd}`, a bare FSDP-consolidated dict, ...) and strip wrapper prefixes (`module.` of DDP,
   `_orig_mod.` of torch.compile).
3. `rename(state, rules)` then `load_strict(model, converted)`: map official names onto argen's and
   load with a strict key/shape report. Non-state entries that some official files carry (RoPE
   tables, KV-cache buffers) are dropped *by name* with `drop(state, patterns)` and reported, never
   skipped by a blanket `strict=False`. Argen-only state with no official counterpart (usage counters)
   is named in `load_strict(fresh=...)` and keeps its initial value. Error messages name the official key
   next to argen's.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..saving import KeyReport, check_state_dict

# Prefixes that training wrappers put in front of every key.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Converted:
    """A state dict in argen's names plus where each key came from and what was dropped."""

    state: dict[str, Tensor]
    source_of: dict[str, str] = field(default_factory=dict)  # argen key -> official key
    dropped: list[str] = field(default_factory=list)  # official keys removed as non-state (RoPE, caches)
    fresh: list[str] = field(default_factory=list)  # argen-only state kept at its initial value (usage counters)
    container: str = ""  # where the state dict was found ("model", "module", "<raw>", ...)


# ----------------------------------------------------------------------------- reading

def read_checkpoint(path: str | os.PathLike, allow_globals: Sequence[Any] = ()) -> Any:
    """Load a checkpoint file onto the CPU without executing arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found (expected an official checkpoint file such as vq_ds16_c2i.pt)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{path} cannot be read as safetensors ({e}); the file is truncated or corrupt") from None
    try:
        if allow_globals:
            with torch.serialization.safe_globals(list(allow_globals)):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "global" in str(e).lower():
            raise CheckpointError(
                f"{path} holds Python objects other than tensors ({first}); argen only opens checkpoints with "
                "torch.load(weights_only=True). Re-save just the state dict, e.g. "
                "torch.save({'model': ckpt['model']}, 'clean.pt'), after checking the file's origin") from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({first}); the file is truncated or corrupt") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} cannot be read ({first}); the file is truncated or corrupt") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def unwrap(obj: Any, containers: Sequence[str] = ("model", "module", "state_dict"), source: str = "checkpoint") -> tuple[dict[str, Tensor], str]:
    """The state dict inside a training checkpoint: the first of `containers` present, else the object
    itself if it is a bare `{name: tensor}` dict (FSDP-consolidated files). Wrapper prefixes are removed."""
    found, where = None, ""
    if isinstance(obj, Mapping):
        for name in containers:
            if name in obj and _is_state_dict(obj[name]):
                found, where = obj[name], name
                break
        if found is None and _is_state_dict(obj):
            found, where = obj, "<raw>"
    if found is None:
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{source}: no state dict found (looked for {', '.join(repr(c) for c in containers)} or a bare "
            f"name -> tensor dict; the file holds: {keys}). Is this the right file?")
    return strip_prefixes(dict(found)), where


def strip_prefixes(state: dict[str, Tensor], prefixes: Iterable[str] = WRAPPER_PREFIXES) -> dict[str, Tensor]:
    """Remove wrapper prefixes (`module.`, `_orig_mod.`) that every key shares."""
    changed = True
    while changed and state:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in state):
                state = {k[len(p):]: v for k, v in state.items()}
                changed = True
    return state


# ----------------------------------------------------------------------------- renaming

Rule = tuple[str, str]  # (regex matched against the whole key, replacement with \1-style groups)


def drop(state: dict[str, Tensor], patterns: Iterable[str]) -> tuple[dict[str, Tensor], list[str]]:
    """Remove keys fully matching any regex in `patterns`; return (kept, dropped keys)."""
    regs = [re.compile(p) for p in patterns]
    kept, dropped = {}, []
    for k, v in state.items():
        (dropped.append(k) if any(r.fullmatch(k) for r in regs) else kept.__setitem__(k, v))
    return kept, dropped


def rename(state: dict[str, Tensor], rules: Sequence[Rule], dropped: Sequence[str] = (), container: str = "") -> Converted:
    """Apply the first fully-matching rule to each key (keys matching no rule keep their name)."""
    regs = [(re.compile(p), r) for p, r in rules]
    out = Converted({}, container=container, dropped=list(dropped))
    for k, v in state.items():
        new = k
        for reg, repl in regs:
            if reg.fullmatch(k):
                new = reg.sub(repl, k)
                break
        if new in out.state:
            raise CheckpointError(f"official keys {out.source_of[new]!r} and {k!r} both map to {new!r}; the renaming table is wrong")
        out.state[new] = v
        out.source_of[new] = k
    return out


# ----------------------------------------------------------------------------- strict loading

def report(model: nn.Module, conv: Converted) -> KeyReport:
    """Key/shape report of `conv` against `model` (argen names)."""
    return check_state_dict(model, conv.state)


def describe(rep: KeyReport, conv: Converted, limit: int = 8) -> str:
    """One line naming missing, unexpected and mis-shaped keys with their official names."""
    def name(k: str) -> str:
        src = conv.source_of.get(k, k)
        return k if src == k else f"{src} (-> {k})"

    return rep.summary(limit, name=name, model="argen")


def load_strict(model: nn.Module, conv: Converted, source: str, hint: str = "", fresh: Iterable[str] = (),
                skip: tuple[str, ...] = ()) -> KeyReport:
    """Copy `conv.state` into `model` if every key and shape matches; else raise CheckpointError.

    `fresh`: regexes of argen-only state with no official counterpart (e.g. a quantizer's usage counters);
    such keys may be absent from the file, keep the model's initial values and are listed in `conv.fresh`.
    `skip`: prefixes of the model's state that another file provides (a generator's bound quantizer comes
    with the tokenizer); the file must not hold them."""
    rep = report(model, conv)
    rep.missing = [k for k in rep.missing if not k.startswith(skip)] if skip else rep.missing
    regs = [re.compile(p) for p in fresh]
    conv.fresh = [k for k in rep.missing if any(r.fullmatch(k) for r in regs)]
    rep.missing = [k for k in rep.missing if k not in conv.fresh]
    if not rep.ok:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: {describe(rep, conv)}"
                              + (f". {hint}" if hint else ""))
    own = model.state_dict()
    with torch.no_grad():
        for k, v in conv.state.items():
            own[k].copy_(v.to(own[k].dtype))
    return rep


__all__ = ["Converted", "Rule", "read_checkpoint", "unwrap", "strip_prefixes", "drop", "rename", "report",
           "describe", "load_strict", "WRAPPER_PREFIXES"]
