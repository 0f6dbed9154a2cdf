"""Exponential moving average (EMA) of a module's parameters and buffers.

    shadow <- decay * shadow + (1 - decay) * current        (floating-point tensors)
    shadow <- current                                        (integer buffers, e.g. BatchNorm counters)

The decay is constant from the first update ("warm-up free"; no `min(decay, (1+n)/(10+n))` ramp), as in
DiT/MAR, so an EMA with decay 0.9999 stays close to the initial weights for the first few thousand steps
(MAR issue #36: sensible samples appear much later with EMA than without). The shadow covers the module's
whole `state_dict()`, so it can be copied into the module (or a copy of it) and saved like any model.
Under FSDP the shadow of each sharded parameter is a DTensor shard like the parameter itself: every rank
averages only its shard (no gathering), and checkpoints store it sharded (state.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..errors import CheckpointError


class EMA:
    """EMA of `module.state_dict()`; call `update(module)` after every optimizer step."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        current = module.state_dict()
        # Under FSDP the shadow of a sharded parameter is a DTensor shard (updated where it lives) and that of
        # a frozen or unsharded one a plain tensor: the fused updates run per kind (they cannot mix them).
        floats: dict[bool, tuple[list[Tensor], list[Tensor]]] = {}
        for k, s in self.shadow.items():
            c = current[k].detach()
            if s.is_floating_point():
                shadows, currents = floats.setdefault(hasattr(s, "device_mesh"), ([], []))
                shadows.append(s)
                currents.append(c.to(s.dtype))
            else:
                s.copy_(c)
        for shadows, currents in floats.values():
            torch._foreach_mul_(shadows, self.decay)
            torch._foreach_add_(shadows, currents, alpha=1.0 - self.decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite `module`'s parameters and buffers with the averaged values (strict key match)."""
        module.load_state_dict(self.shadow, strict=True)

    @contextmanager
    def swapped(self, module: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the EMA weights into `module` (e.g. to sample in a callback), then restore."""
        backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.copy_to(module)
        try:
            yield module
        finally:
            module.load_state_dict(backup, strict=True)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state.get("shadow") if isinstance(state, dict) else None
        if not isinstance(shadow, dict):
            raise CheckpointError("EMA state has no 'shadow' tensors; the checkpoint was not written by argen.train")
        missing = sorted(set(self.shadow) - set(shadow))
        unexpected = sorted(set(shadow) - set(self.shadow))
        wrong = [k for k in self.shadow if k in shadow and tuple(shadow[k].shape) != tuple(self.shadow[k].shape)]
        if missing or unexpected or wrong:
            raise CheckpointError(f"EMA state does not match the model: missing {missing[:5]}, unexpected "
                                  f"{unexpected[:5]}, shape mismatch {wrong[:5]}; resume with the same model config")
        for k, s in self.shadow.items():
            s.copy_(shadow[k])
        self.num_updates = int(state.get("num_updates", 0))
