"""Training checkpoints: one file (or one DCP directory) per saved step, written atomically, with a
`latest` pointer.

Layout of `<out_dir>/checkpoints/`:

    step-00001000.pt     one torch.save dict per checkpoint (see `REQUIRED_KEYS`): single process and DDP
    step-00002000/       a torch.distributed.checkpoint (DCP) directory: FSDP (or checkpoint_format="dcp")
        .metadata            DCP's index of the shards (written last, by the coordinator)
        __0_0.distcp ...     each rank's shards of the model, the EMA and the optimizers
        trainer.pt           everything else, from rank 0 (see `DCP_REQUIRED_KEYS`)
    latest               text file naming the newest complete checkpoint

A DCP checkpoint resumes on any number of ranks and under any strategy (DCP reshards the tensors to the
loading run's layout); a `.pt` file resumes on any number of ranks too (every rank holds the whole state).
A DCP directory is written under a temp name (`.step-00002000.PID-RANDOM.tmp`, PID of rank 0) by all ranks,
completed by rank 0 with `trainer.pt`, then renamed into place before `latest` moves: a rank killed mid-save
leaves only the temp directory, which the next start removes.

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

import os
import pickle
import re
import secrets
import shutil
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import CheckpointError, DiskFullError
from ..saving import _alive, atomic_torch_save, atomic_write_text, remove_stale_temps

FORMAT = "argen-train"
VERSION = 1
LATEST = "latest"
REQUIRED_KEYS = ("format", "version", "step", "config", "task", "ema", "optimizers", "schedulers", "scalers",
                 "rng", "data")
DCP_REQUIRED_KEYS = ("format", "version", "step", "config", "phases", "ema", "schedulers", "scalers", "rng", "data")
TRAINER_FILE = "trainer.pt"
DCP_INDEX = ".metadata"
_NAME = re.compile(r"^step-(\d{8,})(\.pt)?$")
_TEMP_DIR = re.compile(r"^\.step-\d{8,}\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.pt"


def dcp_checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}"


def is_dcp_checkpoint(path: str | Path) -> bool:
    """A complete DCP checkpoint directory (its index and trainer state are both there)."""
    path = Path(path)
    return path.is_dir() and (path / DCP_INDEX).is_file() and (path / TRAINER_FILE).is_file()


def _complete(p: Path) -> bool:
    return p.is_file() if p.suffix == ".pt" else is_dcp_checkpoint(p)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints (files and DCP directories) in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name)) and _complete(p)]
    return [p for _, p in sorted(found)]


def find_latest(directory: str | Path) -> Path | None:
    """The checkpoint named by `latest`, else the newest complete `step-*`, else None."""
    directory = Path(directory)
    pointer = directory / LATEST
    if pointer.is_file():
        target = directory / pointer.read_text().strip()
        if _NAME.match(target.name) and _complete(target):
            return target
    found = list_checkpoints(directory)
    return found[-1] if found else None


def _delete(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _prune(directory: Path, keep: int, current: Path) -> None:
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            if old != current:
                _delete(old)


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
    _prune(directory, keep, path)
    return path


def save_dcp_checkpoint(directory: str | Path, shards: dict[str, Any], state: dict[str, Any], distributed,
                        keep: int = 0) -> Path | None:
    """Write a DCP checkpoint of `state['step']` (collective: call on every rank). `shards` (model, EMA,
    optimizer state dicts, possibly sharded DTensors) go through `torch.distributed.checkpoint.save` from
    every rank; `state` (the rest, identical on all ranks) is written by rank 0. Returns the path on rank 0."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    missing = [k for k in DCP_REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    directory = Path(directory)
    final = dcp_checkpoint_path(directory, int(state["step"]))
    tmp = None
    if distributed.is_main:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        tmp.mkdir()
    tmp = Path(distributed.broadcast(None if tmp is None else str(tmp)))
    try:
        try:
            with _quiet_single_process():
                dcp.save(shards, checkpoint_id=str(tmp), no_dist=not distributed.initialized)
        except CheckpointException as e:  # a BaseException: one rank's failure, re-raised on every rank
            failures = getattr(e, "failures", {}) or {}
            why = "; ".join(f"rank {r}: {_short(f[0] if isinstance(f, tuple) else f)}" for r, f in failures.items())
            previous = find_latest(directory)
            keep_note = f"; {previous} stays the latest checkpoint" if previous is not None else ""
            raise CheckpointError(f"saving the checkpoint of step {state['step']} failed ({why or e}){keep_note}") \
                from None
        if distributed.is_main:
            atomic_torch_save(state, tmp / TRAINER_FILE)
            _fsync_dir(tmp)
            trash = None
            if final.exists():  # the same step saved again (a run resumed from an earlier checkpoint)
                trash = directory / f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
                os.replace(final, trash)
            os.replace(tmp, final)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
            atomic_write_text(directory / LATEST, final.name + "\n")
            _prune(directory, keep, final)
    except DiskFullError as e:
        if distributed.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = find_latest(directory)
        hint = f"; the run can resume from {previous}" if previous is not None else ""
        raise DiskFullError(f"{e}{hint}", errno=e.errno) from None
    except BaseException:
        if distributed.is_main and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    distributed.barrier()
    return final if distributed.is_main else None


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns that it "assumes the intent" of a single process whenever no process group is up: that is
    the intent (no_dist=True), so the warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled")
        yield


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_dcp_state(path: str | Path) -> dict[str, Any]:
    """Read and validate the rank-0 part (`trainer.pt`) of a DCP checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"training checkpoint {path} not found{_others_hint(path)}")
    if not (path / DCP_INDEX).is_file():
        raise CheckpointError(f"{path} has no {DCP_INDEX}: the DCP save did not complete{_others_hint(path)}")
    state = load_checkpoint(path / TRAINER_FILE, required=DCP_REQUIRED_KEYS, hint_of=path)
    return state


def load_dcp_shards(path: str | Path, template: dict[str, Any], distributed) -> None:
    """Fill `template` (state dicts of the loading run, possibly sharded) from the DCP checkpoint at `path`,
    resharding to the loading run's layout (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with _quiet_single_process():
            dcp.load(template, checkpoint_id=str(path), no_dist=not distributed.initialized)
    except (CheckpointException, RuntimeError, OSError, ValueError, KeyError, EOFError) as e:
        raise CheckpointError(f"{path}: the DCP shards do not load ({_short(e)}); the checkpoint is damaged or was "
                              f"written for another model{_others_hint(Path(path))}") from None


def remove_stale_temps_of_run(out_dir: str | Path) -> list[Path]:
    """Delete the temp files (and DCP temp directories) that writers killed mid-write left in the run
    directory and its checkpoint directory (complete checkpoints, `latest` and live writers' temps are never
    touched); returns them."""
    ckpts = checkpoint_dir(out_dir)
    removed = remove_stale_temps(ckpts) + remove_stale_temps(out_dir)
    if ckpts.is_dir():
        for p in sorted(ckpts.iterdir()):
            m = _TEMP_DIR.match(p.name)
            if m is None or not p.is_dir() or _alive(int(m.group("pid"))):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    required: tuple[str, ...] = REQUIRED_KEYS, hint_of: Path | None = None) -> dict[str, Any]:
    """Read and validate a training checkpoint file; raise `CheckpointError` saying what is wrong and what to do.
    (`required`/`hint_of`: the keys and the checkpoint name for the `trainer.pt` of a DCP directory.)"""
    path = Path(path)
    where = Path(hint_of) if hint_of is not None else path
    if not path.is_file():
        raise CheckpointError(f"training checkpoint {path} not found{_others_hint(where)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(f"{path} holds objects other than tensors and plain containers, so it was not "
                                  f"written by argen.train and will not be unpickled{_others_hint(where)}") from None
        raise CheckpointError(f"{path} is truncated or corrupt ({_short(e)}){_others_hint(where)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({_short(e)}){_others_hint(where)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an argen training checkpoint (no format={FORMAT!r}); saved models "
                              "(config.json + model.safetensors) load with argen.load, not as training state")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state['version']}, newer than this argen ({VERSION}); "
                              "upgrade argen")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it is incomplete{_others_hint(where)}")
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
