"""How the training loop talks to other processes: a small strategy object.

`Distributed()` — the default — is one process: every hook is a no-op. `DDP(...)` runs the same loop
under `torchrun` with `torch.nn.parallel.DistributedDataParallel` (gloo on CPU, nccl on CUDA). The loop
only ever calls the hooks below, so FSDP or other strategies can be added as further subclasses:

    setup(device)           join the process group (DDP: `init_process_group`, env:// set by torchrun)
    wrap(task, ...)         the module the loop calls (DDP wrapper) — state is still read from the task
    no_sync(module)         skip the gradient all-reduce on all but the last accumulation micro-batch
    all_reduce_mean(t)      average a 1-D tensor of logged metrics over processes
    gather(obj)             collect a picklable object from every rank on every rank (RNG states)
    barrier()

The library never reads environment variables: the CLI picks the device (e.g. `cuda:{LOCAL_RANK}`) and
the strategy; `init_process_group` itself reads torchrun's variables.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ContextManager

import torch
from torch import nn


class Distributed:
    """Single-process strategy (no-op hooks)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> None:
        pass

    def wrap(self, task: nn.Module, *, multi_phase: bool) -> nn.Module:
        return task

    def no_sync(self, module: nn.Module) -> ContextManager:
        return nullcontext()

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        pass


class DDP(Distributed):
    """DistributedDataParallel over an already launched process group (run the script with torchrun).

    `backend=None` picks nccl for CUDA devices and gloo otherwise. Tasks with several phases (GAN) are
    wrapped with `find_unused_parameters=True`, because e.g. the discriminator phase does not touch the
    generator's parameters; under DDP every phase must return a loss that requires grad on every step
    (multiply an inactive term by 0 rather than returning a constant).
    """

    def __init__(self, backend: str | None = None):
        self.backend = backend

    def setup(self, device: torch.device) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend=self.backend or ("nccl" if device.type == "cuda" else "gloo"))
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device

    def wrap(self, task: nn.Module, *, multi_phase: bool) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" and self.device.index is not None else None
        return DistributedDataParallel(task, device_ids=ids, find_unused_parameters=multi_phase)

    def no_sync(self, module: nn.Module) -> ContextManager:
        return module.no_sync()

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()
