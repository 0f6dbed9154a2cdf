"""Random-number state of a training process: capture, restore, seed, and isolate.

Exact resume needs every source of randomness a step can touch: the loop's own `torch.Generator`
(passed to the task as `ctx.rng`, e.g. for augmentation noise or mask ratios), torch's global CPU
generator (dropout), the CUDA generators (dropout on GPU), Python's `random` and NumPy's legacy global
generator (used by third-party transforms). States are stored as tensors and plain Python values so a
checkpoint loads with `torch.load(weights_only=True)`.

`isolated_global_rng()` restores the global generators when the training loop returns, so calling
`Trainer.fit` does not leave the caller's process-wide random state changed.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import CheckpointError


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def capture_rng_state(loop_rng: torch.Generator) -> dict[str, Any]:
    """Snapshot of every generator, as tensors / plain values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "loop": loop_rng.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if _cuda_in_use() else [],
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
    }


def restore_rng_state(state: dict[str, Any], loop_rng: torch.Generator) -> None:
    """Put every generator back to a `capture_rng_state` snapshot."""
    try:
        loop_rng.set_state(state["loop"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            if len(state["cuda"]) != torch.cuda.device_count():
                raise CheckpointError(f"the checkpoint holds RNG states for {len(state['cuda'])} CUDA devices but "
                                      f"{torch.cuda.device_count()} are visible; resume with the same devices")
            torch.cuda.set_rng_state_all(state["cuda"])
        py = state["python"]
        random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
        npy = state["numpy"]
        np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["gauss"]))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"the checkpoint's RNG state is malformed ({type(e).__name__}: {e}); "
                              "was it written by argen.train?") from None


def seed_everything(seed: int, loop_rng: torch.Generator) -> None:
    """Seed the global generators with `seed` and the loop generator with a different stream of it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # A distinct seed so augmentation noise does not mirror the dropout masks drawn from the global generator.
    loop_rng.manual_seed((seed * 2654435761 + 12345) % 2**63)


@contextmanager
def isolated_global_rng() -> Iterator[None]:
    """Run the block with its own view of the global generators; restore the caller's states afterwards."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if _cuda_in_use() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
