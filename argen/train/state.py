"""What a Trainer checkpoint holds and how it goes back in, for every strategy and both formats.

    save_state(trainer)        -> path (rank 0) / None        collective
    restore_state(trainer, p)                                  collective

Formats (see checkpoint.py): a `.pt` file holds full state dicts (single process, DDP); a DCP directory
holds the model, EMA and optimizer state through `torch.distributed.checkpoint` — sharded DTensors under
FSDP — plus `trainer.pt` (schedulers, scalers, RNG, data position, config) from rank 0. Either format
restores under any strategy and world size:

    .pt  -> single / DDP      load_state_dict on every rank (as always)
    .pt  -> FSDP              full state dicts scattered to the shards (`set_state_dict(full_state_dict=True)`;
                              the optimizer state is re-keyed from positions to parameter names first)
    DCP  -> any               templates from `get_state_dict` of the loading run, filled by `dcp.load`
                              (which reshards N -> M), then `set_state_dict`

The data position is one global stream (sampler.py), so it means the same on any number of ranks. What
cannot carry over to another world size: the per-rank random streams (ranks that did not exist start from
fresh seeds) and the exact floating-point order of gradient reductions — a run resumed on M != N ranks
continues with the same data and the same math, not bit-for-bit. With M == N resume is exact.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import __version__
from ..errors import CheckpointError
from ..saving import load_state_dict_checked
from .checkpoint import (FORMAT, VERSION, checkpoint_dir, load_checkpoint, load_dcp_shards, load_dcp_state,
                         save_checkpoint, save_dcp_checkpoint)
from .sampler import DataPosition

if TYPE_CHECKING:
    from .loop import Trainer

STREAM = "global"  # data["stream"]: the position counts samples of the global stream (all ranks)


def _common(trainer: "Trainer", rng_state: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "step": trainer.step,
        "config": trainer.config.to_dict(),
        "schedulers": {ph.name: ph.scheduler.state_dict() for ph in trainer.phases},
        "scalers": {ph.name: ph.scaler.state_dict() for ph in trainer.phases},
        "rng": {"ranks": trainer.dist.gather(rng_state)},
        "data": {"epoch": trainer.position.epoch, "index": trainer.position.index,
                 "num_samples": len(trainer.dataset), "world_size": trainer.dist.world_size, "stream": STREAM},
        "meta": {"task": f"{type(trainer.task).__module__}.{type(trainer.task).__qualname__}",
                 "argen_version": __version__, "strategy": trainer.dist.name},
    }


def save_state(trainer: "Trainer", rng_state: dict[str, Any]) -> Path | None:
    """Write the checkpoint of the trainer's current step in its strategy's format (collective)."""
    state = _common(trainer, rng_state)
    directory = checkpoint_dir(trainer.out_dir)
    keep = trainer.config.keep_checkpoints
    if trainer.dist.checkpoint_format == "file":
        state.update({"task": trainer.task.state_dict(),
                      "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
                      "optimizers": {ph.name: ph.optimizer.state_dict() for ph in trainer.phases}})
        return save_checkpoint(directory, state, keep=keep) if trainer.is_main else None
    from torch.distributed.checkpoint.state_dict import get_state_dict

    optimizers = [ph.optimizer for ph in trainer.phases]
    fresh = [ph.name for ph in trainer.phases if not ph.optimizer.state]  # e.g. a discriminator not started yet
    model_sd, optim_sd = get_state_dict(trainer.task, optimizers)  # initialises empty optimizer states
    shards = {"model": model_sd, "optim": optim_sd}
    if trainer.ema is not None:
        shards["ema"] = dict(trainer.ema.shadow)
    state.update({"phases": [ph.name for ph in trainer.phases], "fresh_optimizers": fresh,
                  "ema": None if trainer.ema is None else {"decay": trainer.ema.decay,
                                                           "num_updates": trainer.ema.num_updates}})
    try:
        return save_dcp_checkpoint(directory, shards, state, trainer.dist, keep=keep)
    finally:
        _clear_fresh(trainer, fresh)  # the live run continues exactly as if nothing was saved


def _clear_fresh(trainer: "Trainer", names: list[str]) -> None:
    for ph in trainer.phases:
        if ph.name in names:
            ph.optimizer.state.clear()


# ---------------------------------------------------------------------------------------------- restore

def restore_state(trainer: "Trainer", path: Path) -> None:
    """Put the checkpoint at `path` (a `.pt` file or a DCP directory) into the trainer (collective)."""
    path = Path(path)
    where = str(path)
    dcp_dir = path.is_dir()
    state = load_dcp_state(path) if dcp_dir else load_checkpoint(path)
    saved_world = int(state["data"].get("world_size", 1))
    trainer._check_config(state["config"], where, saved_world)
    names = [ph.name for ph in trainer.phases]
    phases = list(state["phases"]) if dcp_dir else list(state["optimizers"])
    if sorted(phases) != sorted(names):
        raise CheckpointError(f"{where} has optimizers for phases {sorted(phases)} but the task defines {names}; "
                              "resume with the same task")
    if dcp_dir:
        _restore_dcp(trainer, path, state)
    elif trainer.dist.sharded:
        _restore_file_sharded(trainer, state, where)
    else:
        _restore_file(trainer, state, where)
    for ph in trainer.phases:
        try:
            ph.scheduler.load_state_dict(state["schedulers"][ph.name])
            ph.scaler.load_state_dict(state["scalers"][ph.name])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{where}: schedule state of phase '{ph.name}' does not load ({e})") from None
    _restore_position(trainer, state, where, saved_world)


def _restore_file(trainer: "Trainer", state: dict[str, Any], where: str) -> None:
    load_state_dict_checked(trainer.task, state["task"], source=f"{where} (task)")
    if trainer.ema is not None:
        trainer.ema.load_state_dict(state["ema"])
    for ph in trainer.phases:
        try:
            ph.optimizer.load_state_dict(state["optimizers"][ph.name])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{where}: optimizer state of phase '{ph.name}' does not match the task's "
                                  f"parameters ({e}); resume with the same model config") from None


def _restore_dcp(trainer: "Trainer", path: Path, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    optimizers = [ph.optimizer for ph in trainer.phases]
    model_sd, optim_sd = get_state_dict(trainer.task, optimizers)  # the loading run's layout, filled in place
    template: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    if trainer.ema is not None:
        if state["ema"] is None:
            raise CheckpointError(f"{path} holds no EMA but ema_decay is set; resume with the run's config")
        template["ema"] = dict(trainer.ema.shadow)
    load_dcp_shards(path, template, trainer.dist)
    try:
        set_state_dict(trainer.task, optimizers, model_state_dict=template["model"],
                       optim_state_dict=template["optim"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: the state does not fit the task ({e}); resume with the same model "
                              "config") from None
    if trainer.ema is not None:
        with torch.no_grad():
            for k, s in trainer.ema.shadow.items():
                if template["ema"][k] is not s:
                    s.copy_(template["ema"][k])
        trainer.ema.num_updates = int(state["ema"]["num_updates"])
    _clear_fresh(trainer, list(state.get("fresh_optimizers", ())))


def _restore_file_sharded(trainer: "Trainer", state: dict[str, Any], where: str) -> None:
    """A `.pt` checkpoint (full tensors) into a sharded (FSDP) task."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
    from torch.distributed.tensor import DTensor, distribute_tensor

    optimizers = [ph.optimizer for ph in trainer.phases]
    full = StateDictOptions(full_state_dict=True)
    try:
        set_state_dict(trainer.task, optimizers, model_state_dict=state["task"],
                       optim_state_dict=_by_name(trainer, state["optimizers"]), options=full)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{where}: the state does not fit the task ({e}); resume with the same model "
                              "config") from None
    if trainer.ema is not None:
        shadow = (state["ema"] or {}).get("shadow")
        if not isinstance(shadow, dict) or sorted(shadow) != sorted(trainer.ema.shadow):
            raise CheckpointError(f"{where}: its EMA does not match the model; resume with the same model config")
        with torch.no_grad():
            for k, s in trainer.ema.shadow.items():
                value = shadow[k].to(s.device, s.dtype)
                s.copy_(distribute_tensor(value, s.device_mesh, s.placements) if isinstance(s, DTensor) else value)
        trainer.ema.num_updates = int(state["ema"].get("num_updates", 0))


def _by_name(trainer: "Trainer", optimizers: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state dicts keyed by parameter position (`Optimizer.state_dict`) -> one state dict keyed by
    parameter name over all phases (the form `set_optimizer_state_dict` takes)."""
    names = {id(p): n for n, p in trainer.task.named_parameters()}
    merged: dict[str, Any] = {"state": {}, "param_groups": []}
    for ph in trainer.phases:
        saved = optimizers[ph.name]
        order = [names[id(p)] for g in ph.optimizer.param_groups for p in g["params"]]
        flat = [i for g in saved["param_groups"] for i in g["params"]]
        if len(flat) != len(order):
            raise CheckpointError(f"optimizer of phase '{ph.name}': {len(flat)} parameters in the checkpoint, "
                                  f"{len(order)} in the task; resume with the same model config")
        fqn = dict(zip(flat, order))
        merged["state"].update({fqn[i]: s for i, s in saved["state"].items()})
        merged["param_groups"] += [{**g, "params": [fqn[i] for i in g["params"]]} for g in saved["param_groups"]]
    return merged


def _restore_position(trainer: "Trainer", state: dict[str, Any], where: str, saved_world: int) -> None:
    data = state["data"]
    if data["num_samples"] != len(trainer.dataset):
        raise CheckpointError(f"{where} was written for {data['num_samples']} samples, the dataset now has "
                              f"{len(trainer.dataset)}; the data position cannot be resumed — use the same dataset")
    if data.get("stream") != STREAM and saved_world > 1:  # one process: the old position is the global one
        raise CheckpointError(f"{where} was written by an older argen on {saved_world} processes, whose data "
                              "position counted each process's own share of the samples; it cannot be resumed "
                              "by this argen (start a new run, or finish it with the argen that wrote it)")
    index = int(data["index"])
    ranks = state["rng"]["ranks"]
    # Same world size: each rank continues its own streams. Another world size: ranks that existed keep
    # theirs, new ranks start fresh (seeded from the run's seed and their rank, as a new run would).
    mine = ranks[trainer.dist.rank] if trainer.dist.rank < len(ranks) else None
    if mine is not None and saved_world != trainer.dist.world_size:
        mine = {**mine, "cuda": []}  # another machine shape: the CUDA generators start from the run's seed
    trainer._rng_state = mine
    trainer.position = DataPosition(int(data["epoch"]), index)
    trainer.step = int(state["step"])


__all__ = ["save_state", "restore_state"]
