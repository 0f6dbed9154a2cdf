"""Training: one plain loop over `task(batch, ctx) -> LossOutput` with exact resume.

    Trainer, StepContext      loop.py        the loop (usage example in its docstring)
    TrainConfig               config.py      every knob, embedded in checkpoints
    build_optimizer, ...      optim.py       AdamW with >=2-D weight decay, warm-up + schedule
    EMA                       ema.py         constant-decay EMA of parameters and buffers
    save/load_checkpoint      checkpoint.py  atomic checkpoints, `latest` pointer, keep-last-N
    ResumableSampler          sampler.py     seeded epoch permutations with a saveable position
    Distributed, DDP, FSDP    distributed.py single-process default; torchrun DDP / FSDP2
    save_state, restore_state state.py       checkpoint contents for every strategy (.pt or DCP)
    Callback, Every           callbacks.py   hooks for periodic eval / sampling
"""
from .callbacks import Callback, Every
from .checkpoint import find_latest, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DDP, FSDP, STRATEGIES, Distributed
from .ema import EMA
from .loop import DivergenceError, StepContext, Trainer, move_to_device
from .optim import build_optimizer, build_scheduler, decay_groups, lr_factor
from .sampler import DataPosition, ResumableSampler

__all__ = ["Trainer", "StepContext", "TrainConfig", "DivergenceError", "Callback", "Every", "EMA", "DDP", "FSDP",
           "STRATEGIES",
           "Distributed", "ResumableSampler", "DataPosition", "build_optimizer", "build_scheduler", "decay_groups",
           "lr_factor", "save_checkpoint", "load_checkpoint", "find_latest", "list_checkpoints", "move_to_device"]
