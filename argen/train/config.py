"""`TrainConfig`: every knob of the training loop in one frozen, JSON-serialisable dataclass.

The config is embedded in every training checkpoint; on resume the fields that decide *what* is computed
(batch size, lr, seed, ...) must match the checkpoint, while the fields in `RESUME_MUTABLE` (how long to
run, how often to log/save, worker count, progress display) may change between runs.

Batch size semantics: `batch_size` is the micro-batch per process; one optimizer step sees
`batch_size * grad_accum * world_size` samples (the global batch). A run resumed on another number of
processes may change `batch_size` and `grad_accum` as long as the global batch stays the same
(`keep_global_batch` computes such a config; the Trainer refuses any other change).

Precision: "bf16" / "fp16" turn on `torch.autocast` only when the task lives on a CUDA device ("fp16"
also enables a gradient scaler). On CPU every precision runs in plain fp32 (CPU autocast is slow and
changes numerics for little gain), so the same config runs anywhere without edits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..config import Config

# Fields that may differ between a checkpoint and the config used to resume it.
RESUME_MUTABLE = frozenset({"steps", "log_every", "ckpt_every", "keep_checkpoints", "num_workers", "progress",
                            "tensorboard"})


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Hyper-parameters of `argen.train.Trainer` (not a registry kind: the Trainer also needs a task and data)."""

    steps: int = 1000  # optimizer steps in the whole run
    batch_size: int = 32  # micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4  # peak learning rate (after warm-up)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05  # AdamW decay, applied to >=2-D parameters only (see optim.py)
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # shape after warm-up
    min_lr_ratio: float = 0.0  # final lr of cosine/linear decay, as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm per optimizer; 0 = no clipping (norm is still logged)
    ema_decay: float = 0.0  # EMA of the weights with this constant decay; 0 = off
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype on CUDA; CPU always runs fp32
    log_every: int = 10  # write a JSONL log record every N steps (and at the last step)
    ckpt_every: int = 1000  # write a checkpoint every N steps; 0 = only at the end
    keep_checkpoints: int = 3  # keep the newest N checkpoints; 0 = keep all
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes
    progress: bool = False  # tqdm progress bar (main process only)
    tensorboard: bool = False  # also write TensorBoard scalars (needs `pip install tensorboard`)

    def __post_init__(self):
        _positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                     "log_every": self.log_every}
        for name, value in _positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value in {"warmup_steps": self.warmup_steps, "ckpt_every": self.ckpt_every,
                            "keep_checkpoints": self.keep_checkpoints, "num_workers": self.num_workers,
                            "seed": self.seed}.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off / default), got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, e.g. 1e-4; got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), e.g. (0.9, 0.95); got {self.betas}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0 (0 = none), got {self.weight_decay}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1] (fraction of lr at the end), got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 = no clipping), got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off, typical 0.999-0.9999), got {self.ema_decay}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps}); set "
                             f"train.warmup_steps={self.steps // 10} (or 0) or train for more steps")

    @property
    def samples_per_step(self) -> int:
        """Samples per optimizer step in one process (multiply by the world size for the global batch)."""
        return self.batch_size * self.grad_accum


def keep_global_batch(config: TrainConfig, saved_world: int, world: int) -> TrainConfig:
    """`config` (from a run on `saved_world` processes) adjusted to keep its global batch on `world` processes:
    grad_accum scaled when that divides, else batch_size; unchanged when neither does (the Trainer then
    refuses to resume, saying what would fit)."""
    if saved_world == world:
        return config
    total = config.batch_size * config.grad_accum * saved_world
    if total % (config.batch_size * world) == 0:
        return config.replace(grad_accum=total // (config.batch_size * world))
    if total % (config.grad_accum * world) == 0:
        return config.replace(batch_size=total // (config.grad_accum * world))
    return config
