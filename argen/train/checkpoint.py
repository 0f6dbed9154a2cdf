"""Training checkpoints: one file per saved step, written atomically, with a `latest` pointer.

Layout of `<out_dir>/checkpoints/`:

    step-00001000.pt     one torch.save dict per checkpoint (see `REQUIRED_KEYS`)
    step-00002000.pt
    latest               text file naming the newest complete checkpoint

A checkpoint holds everything needed to continue a run bit-for-bit: the task's state dict (the model(s)),
the EMA shadow, every optimizer / lr scheduler / grad scaler (keyed by phase name), the RNG states of every
process (`rng.py`), the data position (`sampler.py`), the step and the `TrainConfig`. Only tensors and plain
Python containers are stored, so it loads with `torch.load(weights_only=True)` — no arbitrary unpickling.

Writes go to a temp file that is renamed over the target (`argen.saving.atomic_path`), then `latest` is
rewritten the same way, then old checkpoints beyond `keep` are deleted. A crash at any point leaves the
previous checkpoint and pointer intact; a full disk raises a one-line `DiskFullError` that names the
checkpoint to resume from. A writer killed mid-way (kill -9) leaves only its temp file, which
`remove_stale_temps` deletes when a Trainer next starts in the directory. A checkpoint damaged later (disk,
copy) fails to load with a `CheckpointError` that names the other checkpoints to resume from instead.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, DiskFullError
from ..saving import atomic_torch_save, atomic_write_text, remove_stale_temps

FORMAT = "argen-train"
VERSION = 1
LATEST = "latest"
REQUIRED_KEYS = ("format", "version", "step", "config", "task", "ema", "optimizers", "schedulers", "scalers",
                 "rng", "data")
_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def find_latest(directory: str | Path) -> Path | None:
    """The checkpoint named by `latest`, else the newest `step-*.pt`, else None."""
    directory = Path(directory)
    pointer = directory / LATEST
    if pointer.is_file():
        target = directory / pointer.read_text().strip()
        if target.is_file():
            return target
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_checkpoint(directory: str | Path, state: dict[str, Any], keep: int = 0) -> Path:
    """Atomically write `state` as the checkpoint of `state['step']`, point `latest` at it, prune to `keep`."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    directory = Path(directory)
    path = checkpoint_path(directory, int(state["step"]))
    try:
        atomic_torch_save(state, path)
        atomic_write_text(directory / LATEST, path.name + "\n")
    except DiskFullError as e:
        previous = find_latest(directory)
        hint = (f"; the run can resume from {previous} (older checkpoints can be deleted, or keep_checkpoints "
                "lowered, to make room)" if previous is not None else "")
        raise DiskFullError(f"{e}{hint}", errno=e.errno) from None
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
    return path


def remove_stale_temps_of_run(out_dir: str | Path) -> list[Path]:
    """Delete the temp files that writers killed mid-write left in the run directory and its checkpoint
    directory (complete checkpoints, `latest` and live writers' temps are never touched); returns them."""
    return remove_stale_temps(checkpoint_dir(out_dir)) + remove_stale_temps(out_dir)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a training checkpoint; raise `CheckpointError` saying what is wrong and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training checkpoint {path} not found{_others_hint(path)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(f"{path} holds objects other than tensors and plain containers, so it was not "
                                  f"written by argen.train and will not be unpickled{_others_hint(path)}") from None
        raise CheckpointError(f"{path} is truncated or corrupt ({_short(e)}){_others_hint(path)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({_short(e)}){_others_hint(path)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an argen training checkpoint (no format={FORMAT!r}); saved models "
                              "(config.json + model.safetensors) load with argen.load, not as training state")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state['version']}, newer than this argen ({VERSION}); "
                              "upgrade argen")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it is incomplete{_others_hint(path)}")
    return state


def _short(e: BaseException, limit: int = 160) -> str:
    text = f"{type(e).__name__}: {e}".splitlines()[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _others_hint(path: Path) -> str:
    others = [p for p in list_checkpoints(path.parent) if p.name != path.name]
    if not others:
        return ""
    names = ", ".join(str(p) for p in others[-3:])
    return f"; resume from an earlier checkpoint instead (resume='{others[-1]}'), available: {names}"
