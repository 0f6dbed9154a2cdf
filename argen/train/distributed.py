"""How the training loop talks to other processes: a small strategy object.

    Distributed()   one process (the default): every hook is a no-op
    DDP()           torch DistributedDataParallel: every rank holds the whole model, gradients all-reduced
    FSDP()          FSDP2 (`torch.distributed.fsdp.fully_shard`): parameters, gradients and optimizer state
                    sharded over the ranks; bf16 mixed precision on CUDA; checkpoints through
                    torch.distributed.checkpoint (DCP), resumable on another number of ranks

All three run the same `Trainer` loop, which only calls these hooks:

    setup(device)           join the process group (`init_process_group`; env:// set by torchrun)
    wrap(task, ...)         make the task distributed; the Trainer builds the optimizers *after* this, from
                            the wrapped task's parameters (FSDP replaces them with sharded DTensors)
    no_sync(module)         skip the gradient reduction on all but the last accumulation micro-batch
    all_reduce_mean(t)      average a 1-D tensor of logged metrics over processes
    gather(obj)             collect a picklable object from every rank on every rank (RNG states)
    broadcast(obj)          rank 0's picklable object on every rank
    barrier()

Gloo runs on CPU, NCCL on CUDA; `backend=None` picks by device. The CLI picks the device (`cuda:{LOCAL_RANK}`)
and the strategy; `init_process_group` reads torchrun's rendezvous variables (or takes `init_method`/`rank`/
`world_size` given here, e.g. a one-process group). The one variable read here is torchrun's restart count: after a
`--max-restarts` restart the ranks join through the same agent store as the failed attempt, whose process-group keys
(the dead ranks' gloo addresses) are still there, so a restarted rank can connect to a dead one and fail ("Connection
refused"); each attempt therefore gets its own key prefix (tests/train/test_train_torchrun.py).

Activation checkpointing (`activation_checkpointing=True`, any strategy) recomputes each transformer block's
activations in the backward pass instead of storing them (`torch.utils.checkpoint`, non-reentrant: dropout
masks are replayed), trading about a third more compute for activation memory. It applies to the blocks of
every `argen.nn.trunk.Trunk` in the task (every sequence generator) and leaves parameter names unchanged.

FSDP units: each block of a `Trunk` becomes its own unit (its parameters are gathered just for its forward
and backward), unless the trunk cross-attends (its blocks' context projections are called from outside the
block); the rest of the task is the root unit. A task can name its units itself with `fsdp_units()`.
Frozen parameters (the tokenizer inside a next-scale generator, perceptual networks) are not sharded.
Under FSDP call the task only through the Trainer during training (its parameters are shards); the Trainer's
`unsharded(module)` gives a plain copy with the trained weights for saving and sampling.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import Any, ContextManager, Iterator, Literal

import torch
from torch import nn

from ..errors import ConfigError

CheckpointFormat = Literal["file", "dcp"]


class Distributed:
    """Single-process strategy (no-op hooks). `checkpoint_format`: "file" (one `step-N.pt`, the default) or
    "dcp" (a torch.distributed.checkpoint directory, as FSDP writes)."""

    name = "single"
    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    sharded = False  # parameters are shards (FSDP): state goes through torch.distributed.checkpoint

    def __init__(self, *, activation_checkpointing: bool = False, checkpoint_format: CheckpointFormat = "file"):
        if checkpoint_format not in ("file", "dcp"):
            raise ConfigError(f"checkpoint_format must be 'file' or 'dcp', got {checkpoint_format!r}")
        self.activation_checkpointing = activation_checkpointing
        self.checkpoint_format = checkpoint_format

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        """Whether a process group is up (collectives go through torch.distributed)."""
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()

    def setup(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def wrap(self, task: nn.Module, *, multi_phase: bool, precision: str = "fp32") -> nn.Module:
        if self.activation_checkpointing:
            apply_activation_checkpointing(task)
        return task

    def no_sync(self, module: nn.Module) -> ContextManager:
        return nullcontext()

    def forward_context(self) -> ContextManager:
        """Entered around every forward of the wrapped task."""
        return nullcontext()

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class _ProcessGroup(Distributed):
    """Shared process-group plumbing of DDP and FSDP."""

    def __init__(self, backend: str | None = None, *, init_method: str | None = None, rank: int | None = None,
                 world_size: int | None = None, timeout_minutes: float | None = None,
                 activation_checkpointing: bool = False, checkpoint_format: CheckpointFormat = "file"):
        super().__init__(activation_checkpointing=activation_checkpointing, checkpoint_format=checkpoint_format)
        self.backend = backend
        self.init_method, self._rank, self._world_size = init_method, rank, world_size
        self.timeout_minutes = timeout_minutes

    def setup(self, device: torch.device) -> None:
        """Join the process group (once; later calls only record the device)."""
        import torch.distributed as dist

        device = torch.device(device)
        if not dist.is_initialized():
            kwargs: dict[str, Any] = {"backend": self.backend or ("nccl" if device.type == "cuda" else "gloo")}
            if self.timeout_minutes is not None:
                kwargs["timeout"] = timedelta(minutes=self.timeout_minutes)
            if self.init_method is not None:
                kwargs.update(init_method=self.init_method, rank=self._rank, world_size=self._world_size)
            elif (store := _attempt_store(kwargs.get("timeout"))) is not None:
                kwargs.update(store=store, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
            if device.type == "cuda" and device.index is not None:
                kwargs["device_id"] = device  # binds NCCL to this rank's GPU (no guessing from the rank)
            dist.init_process_group(**kwargs)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device

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

    def broadcast(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.device.type == "cuda" and self.device.index is not None:
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group together (the CLI calls this at the end of a successful command)."""
        import torch.distributed as dist

        if dist.is_initialized():
            # every rank waits for the slowest (rank 0 writes the final files) before any tears its gloo pairs
            # down: a rank whose peers have already shut their sockets can abort in the backend's teardown
            self.barrier()
            dist.destroy_process_group()


def _attempt_store(timeout: timedelta | None):
    """Under torchrun: the rendezvous store (MASTER_ADDR:MASTER_PORT) with this restart attempt's own key prefix;
    None outside torchrun (init_process_group then reads the environment as usual). See the module docstring."""
    import torch.distributed as dist

    env = os.environ
    if "TORCHELASTIC_RESTART_COUNT" not in env or not {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"} <= set(env):
        return None
    # torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE); other launchers leave it to rank 0
    host = env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and int(env["RANK"]) == 0
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), int(env["WORLD_SIZE"]), is_master=host,
                          timeout=timeout or timedelta(minutes=30), multi_tenant=host)
    return dist.PrefixStore(f"argen/attempt-{env['TORCHELASTIC_RESTART_COUNT']}", store)


class DDP(_ProcessGroup):
    """DistributedDataParallel over a launched process group (run the script with torchrun).

    Tasks with several phases (GAN) are wrapped with `find_unused_parameters=True`, because e.g. the
    discriminator phase does not touch the generator's parameters; under DDP every phase must return a loss
    that requires grad on every step (multiply an inactive term by 0 rather than returning a constant).
    """

    name = "ddp"

    def wrap(self, task: nn.Module, *, multi_phase: bool, precision: str = "fp32") -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        super().wrap(task, multi_phase=multi_phase, precision=precision)
        ids = [self.device.index] if self.device.type == "cuda" and self.device.index is not None else None
        return DistributedDataParallel(task, device_ids=ids, find_unused_parameters=multi_phase)

    def no_sync(self, module: nn.Module) -> ContextManager:
        return module.no_sync()


class FSDP(_ProcessGroup):
    """FSDP2: `fully_shard` every unit (see the module docstring) and then the task; checkpoints are DCP.

    Mixed precision applies on CUDA with `precision="bf16"` only: parameters are gathered in bf16 and
    gradients reduced in `reduce_dtype` ("fp32" default: averages of many ranks keep their precision; "bf16"
    halves the traffic); the sharded master weights and the optimizer stay fp32. On CPU everything is fp32.
    `reshard_after_forward=False` keeps gathered parameters from forward to backward (ZeRO-2-like: more
    memory, one all-gather fewer per unit). fp16 is refused (use bf16: no loss scaling is needed).
    """

    name = "fsdp"
    sharded = True

    def __init__(self, backend: str | None = None, *, reduce_dtype: Literal["fp32", "bf16"] = "fp32",
                 reshard_after_forward: bool = True, **kwargs: Any):
        kwargs.setdefault("checkpoint_format", "dcp")
        if kwargs["checkpoint_format"] != "dcp":
            raise ConfigError("FSDP checkpoints are torch.distributed.checkpoint directories (checkpoint_format="
                              "'dcp'); the shards never exist whole on one rank")
        super().__init__(backend, **kwargs)
        if reduce_dtype not in ("fp32", "bf16"):
            raise ConfigError(f"reduce_dtype must be 'fp32' or 'bf16', got {reduce_dtype!r}")
        self.reduce_dtype = reduce_dtype
        self.reshard_after_forward = reshard_after_forward

    def mixed_precision(self, precision: str):
        from torch.distributed.fsdp import MixedPrecisionPolicy

        if self.device.type != "cuda" or precision != "bf16":
            return MixedPrecisionPolicy()  # fp32 everywhere (CPU always trains in fp32, see config.py)
        reduce = torch.float32 if self.reduce_dtype == "fp32" else torch.bfloat16
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=reduce)

    def wrap(self, task: nn.Module, *, multi_phase: bool, precision: str = "fp32") -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        if precision == "fp16" and self.device.type == "cuda":
            raise ConfigError("FSDP trains with precision bf16 or fp32 (fp16 needs a sharded grad scaler); set "
                              "train.precision=bf16")
        Distributed.wrap(self, task, multi_phase=multi_phase, precision=precision)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        frozen = {p for p in task.parameters() if not p.requires_grad}
        common = dict(mesh=mesh, mp_policy=self.mixed_precision(precision), ignored_params=frozen or None)
        for unit in fsdp_units(task):
            if not any(p.requires_grad for p in unit.parameters()):
                continue
            fully_shard(unit, reshard_after_forward=self.reshard_after_forward, **common)
            for method in ("modulation",):  # called by the trunk before the block's forward
                if callable(getattr(unit, method, None)):
                    register_fsdp_forward_method(unit, method)
        fully_shard(task, reshard_after_forward=False, **common)
        return task

    def no_sync(self, module: nn.Module) -> ContextManager:
        return _fsdp_no_sync(module)

    def forward_context(self) -> ContextManager:
        return _quiet_views()


@contextmanager
def _quiet_views() -> Iterator[None]:
    """FSDP2 warns when a unit's forward method returns views, in case the caller modifies them in place. The
    AdaLN blocks' `modulation` returns its six vectors as views (`unbind`), used out of place only; FSDP's
    gradients there equal one process's (test_fsdp_units_with_forward_methods_compute_one_process_gradients in
    tests/train/test_train_fsdp_generators.py), so that warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        yield


@contextmanager
def _fsdp_no_sync(module: nn.Module) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


# ---------------------------------------------------------------------------------------------- units

def trunk_blocks(task: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(trunk, block) for every block of every `argen.nn.trunk.Trunk` inside `task`."""
    from ..nn.trunk import Trunk

    return [(m, b) for m in task.modules() if isinstance(m, Trunk) for b in m]


def fsdp_units(task: nn.Module) -> list[nn.Module]:
    """The submodules FSDP shards as units of their own (innermost first): `task.fsdp_units()` when the task
    defines it, else the blocks of every trunk that does not cross-attend."""
    hook = getattr(task, "fsdp_units", None)
    if callable(hook):
        return list(hook())
    return [b for trunk, b in trunk_blocks(task) if not getattr(trunk, "cross", False)]


def apply_activation_checkpointing(task: nn.Module) -> int:
    """Recompute every trunk block's forward in backward (non-reentrant checkpointing); returns how many
    blocks. Parameter names do not change, so checkpoints and saved models are unaffected."""
    from torch.distributed._composable import checkpoint

    blocks = [b for _, b in trunk_blocks(task)]
    if not blocks:
        raise ConfigError(f"activation checkpointing found no transformer blocks (argen.nn.trunk.Trunk) in "
                          f"{type(task).__name__}; it applies to sequence generators, not tokenizers")
    for b in blocks:
        checkpoint(b)
    return len(blocks)


def local_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor for a DTensor (the whole value: e.g. a grad norm reduced over shards) or `t` itself."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


STRATEGIES = {"single": Distributed, "ddp": DDP, "fsdp": FSDP}
