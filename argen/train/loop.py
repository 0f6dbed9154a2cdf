"""`Trainer`: one plain training loop over `task(batch, ctx) -> LossOutput`, resumable bit-for-bit.

A *task* is an `nn.Module` that owns the trainable model(s) and turns a batch into a loss:

    class Task(nn.Module):
        def forward(self, batch, ctx: StepContext) -> LossOutput: ...    # required
        def phases(self) -> dict[str, params | dict]: ...                 # optional: several optimizers
        def no_weight_decay(self) -> Iterable[str]: ...                   # optional: names/prefixes
        def ema_module(self) -> nn.Module: ...                            # optional: what the EMA tracks

`ctx` carries `step` (0-based index of the step being computed), `num_steps`, `phase`, `micro_step` and
`rng` — the loop's `torch.Generator` on the task's device. Draw every random number of the task
(augmentation noise, mask ratios, orders, timesteps) from `ctx.rng`; dropout may use torch's global
generator. Both are checkpointed, so resuming reproduces an uninterrupted run exactly (bitwise on CPU).
Keep dataset `__getitem__` deterministic (do random augmentation in the task with `ctx.rng`): DataLoader
worker seeds are not part of the resumable state.

Phases (GAN training without forking the loop). By default the task has one phase, "main", holding all
its trainable parameters. A task whose `phases()` returns e.g. `{"generator": gen_params,
"discriminator": {"params": disc_params, "lr": 2e-4}}` gets one AdamW (+ lr schedule, + grad scaler)
per phase; every step runs the phases in that order, each as: zero this phase's grads -> for each
micro-batch `task(batch, ctx)` with `ctx.phase` set, backward -> unscale, clip, step. So the
discriminator phase never sees gradients that the generator loss left on discriminator weights, and the
generator's adversarial term is computed against the discriminator as it was before its update (taming
VQGAN's two-optimizer scheme). A phase whose loss does not require grad (e.g. before `disc_start`) skips
its optimizer step. Per-phase keys allowed: params, lr, betas, weight_decay.

Each step: micro-batches (`grad_accum` of them) -> phases -> EMA update -> JSONL log every `log_every`
steps -> callbacks -> checkpoint every `ckpt_every` steps and at the end. Files in `out_dir`:

    train_config.json     the TrainConfig of the run
    log.jsonl             one object per log step: step, epoch, loss, metrics, lr, grad_norm, throughput
                          (samples/s over all processes), elapsed; later phases appear in metrics as
                          "<phase>/loss", "<phase>/lr", "<phase>/grad_norm", "<phase>/<metric>"
    eval.jsonl            what callbacks pass to `trainer.log_eval` (step + metrics)
    checkpoints/          step-XXXXXXXX.pt + latest (see checkpoint.py)
    tensorboard/          only with config.tensorboard (needs the tensorboard package)

Usage:

    from argen.train import Trainer, TrainConfig, StepContext, Every
    from argen.types import LossOutput

    class Classify(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
        def forward(self, batch, ctx: StepContext) -> LossOutput:
            x, y = batch
            x = x + 0.1 * torch.randn(x.shape, generator=ctx.rng, device=x.device)   # augmentation
            logits = self.net(x)
            return LossOutput(F.cross_entropy(logits, y), {"acc": (logits.argmax(-1) == y).float().mean()})

    cfg = TrainConfig(steps=2000, batch_size=64, lr=3e-4, warmup_steps=100, schedule="cosine", ema_decay=0.999)
    trainer = Trainer(cfg, Classify(net), dataset, "runs/demo", resume=True,    # continues if checkpoints exist
                      callbacks=[Every(500, lambda t, step: t.log_eval({"val_acc": evaluate(t.task)}))])
    trainer.fit()
    trainer.ema.copy_to(trainer.task)        # then argen.save(trainer.task.net, "runs/demo/model")

Distributed: pass `distributed=DDP()` or `distributed=FSDP()` and launch with torchrun; everything else
stays the same (distributed.py). The task is wrapped before the optimizers are built, so under FSDP they hold
the sharded parameters; `batch_size` stays per process, and every step consumes the next global batch of one
sample stream (sampler.py), so a checkpoint resumes on another number of processes (state.py) as long as
the global batch `batch_size * grad_accum * world_size` is kept. Under FSDP, `unsharded(module)` gives a
plain copy of a trained part (rank 0) to save or sample with.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..errors import ArgenError, CheckpointError, ConfigError
from ..saving import atomic_write_text, disk_full_error, load_state_dict_checked
from ..types import LossOutput
from .callbacks import Callback
from .checkpoint import checkpoint_dir, find_latest, list_checkpoints, remove_stale_temps_of_run
from .config import RESUME_MUTABLE, TrainConfig
from .distributed import Distributed, local_value
from .ema import EMA
from .optim import build_optimizer, build_scheduler
from .rng import capture_rng_state, isolated_global_rng, restore_rng_state, seed_everything
from .sampler import DataPosition, ResumableSampler
from .state import restore_state, save_state

LOG_NAME = "log.jsonl"
EVAL_NAME = "eval.jsonl"
_PHASE_KEYS = {"params", "lr", "betas", "weight_decay"}


class DivergenceError(ArgenError, FloatingPointError):
    """The loss became NaN/inf."""


@dataclass
class StepContext:
    """What the loop tells the task about the call: which step, phase and micro-batch, and the generator."""

    step: int  # 0-based index of the optimizer step being computed
    num_steps: int  # total steps of the run (config.steps)
    phase: str  # "main" unless the task defines phases()
    micro_step: int  # index of the micro-batch within gradient accumulation
    rng: torch.Generator  # the loop's generator, on the task's device


@dataclass
class _Phase:
    name: str
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


class _Window:
    """Running sums between two log steps (tensors stay on the device until the log step)."""

    def __init__(self):
        self.steps = 0
        self.samples = 0
        self.start = time.perf_counter()
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def add(self, key: str, value: Tensor) -> None:
        self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.counts[key] = self.counts.get(key, 0) + 1


class Trainer:
    """Train `task` on `dataset` into `out_dir` (see the module docstring).

    `resume`: False starts fresh (and refuses an `out_dir` that already holds checkpoints); True continues
    from `out_dir/checkpoints/latest` when it exists and starts fresh otherwise; a path resumes from that
    checkpoint file. `device` defaults to the device of the task's parameters. The task is moved there.
    """

    def __init__(self, config: TrainConfig, task: nn.Module, dataset: Dataset, out_dir: str | Path, *,
                 collate_fn=None, callbacks: Sequence[Callback] = (), distributed: Distributed | None = None,
                 resume: bool | str | Path = False, device: str | torch.device | None = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("tensorboard=true needs the tensorboard package: pip install 'argen[tensorboard]' "
                              "(or set tensorboard=false; log.jsonl is always written)")
        self.config = config
        self.task = task
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.collate_fn = collate_fn
        self.callbacks = list(callbacks)
        self.dist = distributed or Distributed()
        first = next(iter(task.parameters()), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None
                                                                         else torch.device("cpu"))
        task.to(self.device)
        self.dist.setup(self.device)

        hook = getattr(task, "phases", None)
        multi_phase = callable(hook) and isinstance(spec := hook(), dict) and len(spec) > 1
        # Wrap first: FSDP replaces the parameters with shards, which the optimizers must hold.
        self.model = self.dist.wrap(task, multi_phase=multi_phase, precision=config.precision)
        self.phases = self._build_phases()
        self.ema = EMA(self.ema_module, config.ema_decay) if config.ema_decay > 0 else None
        self.rng = torch.Generator(device=self.device)
        self.sampler = ResumableSampler(len(dataset), seed=config.seed, rank=self.dist.rank,
                                        world_size=self.dist.world_size, chunk=config.samples_per_step)
        self.step = 0
        self.position = DataPosition()
        self._rng_state: dict[str, Any] | None = None  # per-process RNG snapshot between fit() calls
        self._in_fit = False
        self._log_file = None
        self._eval_file = None
        self._tb = None

        ckpts = checkpoint_dir(self.out_dir)
        if self.is_main:  # temp files of a write killed mid-way (kill -9): never complete, never renamed
            remove_stale_temps_of_run(self.out_dir)
        self.dist.barrier()  # stale temps are gone before any rank looks for checkpoints
        if resume is True:
            latest = find_latest(ckpts)
            if latest is not None:
                restore_state(self, latest)
        elif resume:
            restore_state(self, Path(resume))
        elif list_checkpoints(ckpts):
            raise ConfigError(f"{self.out_dir} already holds checkpoints ({find_latest(ckpts)}); pass resume=True "
                              "to continue that run, or choose a new out_dir")
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "train_config.json", config_json(config))
            self._truncate_logs()

    # ------------------------------------------------------------------------------------------ setup

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def ema_module(self) -> nn.Module:
        """The module the EMA tracks: `task.ema_module()` if the task defines it, else the task."""
        hook = getattr(self.task, "ema_module", None)
        return hook() if callable(hook) else self.task

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {ph.name: ph.optimizer for ph in self.phases}

    @property
    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        return {ph.name: ph.scheduler for ph in self.phases}

    def _build_phases(self) -> list[_Phase]:
        task, cfg = self.task, self.config
        hook = getattr(task, "phases", None)
        spec = hook() if callable(hook) else {"main": [p for p in task.parameters() if p.requires_grad]}
        if not isinstance(spec, dict) or not spec:
            raise ConfigError(f"{type(task).__name__}.phases() must return a non-empty dict "
                              "{name: params or {'params': ..., 'lr': ...}}")
        names = {id(p): n for n, p in task.named_parameters()}
        prefixes = list(getattr(task, "no_weight_decay", lambda: ())())
        no_decay = [p for n, p in task.named_parameters()
                    if any(n == x or n.startswith(x.rstrip(".") + ".") for x in prefixes)]
        owner: dict[int, str] = {}
        phases = []
        fp16 = self.device.type == "cuda" and cfg.precision == "fp16"
        for name, entry in spec.items():
            opts = dict(entry) if isinstance(entry, dict) else {"params": entry}
            unknown = set(opts) - _PHASE_KEYS
            if unknown or "params" not in opts:
                raise ConfigError(f"phase '{name}': allowed keys are {sorted(_PHASE_KEYS)} with 'params' required; "
                                  f"got {sorted(opts)}")
            params = [p for p in opts.pop("params") if p.requires_grad]
            for p in params:
                if id(p) in owner:
                    raise ConfigError(f"parameter {names.get(id(p), '?')} is in phases '{owner[id(p)]}' and "
                                      f"'{name}'; give each parameter to exactly one phase")
                owner[id(p)] = name
            if not params:
                raise ConfigError(f"phase '{name}' has no trainable parameters")
            optimizer = build_optimizer(params, cfg, no_decay=no_decay, **opts)
            phases.append(_Phase(name, params, optimizer, build_scheduler(optimizer, cfg),
                                 torch.amp.GradScaler(self.device.type, enabled=fp16)))
        orphans = [n for n, p in task.named_parameters() if p.requires_grad and id(p) not in owner]
        if orphans:
            raise ConfigError(f"trainable parameters in no phase: {orphans[:5]}; add them to a phase or freeze "
                              "them with requires_grad_(False)")
        return phases

    def _autocast(self):
        if self.device.type != "cuda" or self.config.precision == "fp32":
            return nullcontext()  # CPU always trains in fp32 (see config.py)
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def _loader(self) -> DataLoader:
        self.sampler.start = self.position
        # An explicit generator for worker base seeds, so building the loader leaves the global RNG untouched.
        g = torch.Generator().manual_seed(self.config.seed * 1009 + self.step * 31 + self.dist.rank)
        return DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=self.sampler,
                          num_workers=self.config.num_workers, collate_fn=self.collate_fn, generator=g,
                          pin_memory=self.device.type == "cuda")

    # ------------------------------------------------------------------------------------------ training

    def fit(self, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Train until `config.steps` (or until step `stop_at`, e.g. to split a run into jobs); a checkpoint
        is written at the stopping step. Returns the log records written by this call."""
        end = self.config.steps if stop_at is None else min(int(stop_at), self.config.steps)
        records: list[dict[str, Any]] = []
        if self.step >= end:
            return records
        with isolated_global_rng():
            if self._rng_state is None:
                seed_everything(self.config.seed + self.dist.rank, self.rng)
            else:
                restore_rng_state(self._rng_state, self.rng)
            self._in_fit = True
            try:
                self._run(end, records)
                self._rng_state = capture_rng_state(self.rng)
            finally:
                self._in_fit = False
                self._close_outputs()
        return records

    def _run(self, end: int, records: list[dict[str, Any]]) -> None:
        from tqdm.auto import tqdm

        cfg = self.config
        self._open_outputs()
        batches = iter(self._loader())
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (cfg.progress and self.is_main))
        for cb in self.callbacks:
            cb.on_fit_start(self)
        window = _Window()
        try:
            while self.step < end:
                micro = [move_to_device(next(batches), self.device) for _ in range(cfg.grad_accum)]
                self._train_step(micro, window)
                self.step += 1
                self.position = self.sampler.advance(self.position, self.sampler.global_batch)
                window.steps += 1
                window.samples += cfg.samples_per_step * self.dist.world_size
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == end:
                    record = self._write_log(window)
                    records.append(record)
                    bar.set_postfix(loss=f"{record['loss']:.4g}")
                    window = _Window()
                for cb in self.callbacks:
                    cb.on_step_end(self, self.step)
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == end:
                    self.save_checkpoint()
            for cb in self.callbacks:
                cb.on_fit_end(self)
        finally:
            bar.close()
            del batches  # shut DataLoader workers down

    def _train_step(self, micro_batches: list[Any], window: _Window) -> None:
        cfg = self.config
        n = len(micro_batches)
        self.task.train()
        for i, ph in enumerate(self.phases):
            prefix = "" if i == 0 else f"{ph.name}/"
            ph.optimizer.zero_grad(set_to_none=True)
            stepped = False
            for m, batch in enumerate(micro_batches):
                ctx = StepContext(step=self.step, num_steps=cfg.steps, phase=ph.name, micro_step=m, rng=self.rng)
                sync = m == n - 1
                with nullcontext() if sync else self.dist.no_sync(self.model):
                    with self._autocast(), self.dist.forward_context():
                        out = self.model(batch, ctx)
                    loss = _check_output(out, ph.name)
                    if loss.requires_grad:
                        ph.scaler.scale(loss / n if n > 1 else loss).backward()
                        stepped = True
                window.add(prefix + "loss", loss.detach().float() / n)
                for k, v in out.metrics.items():
                    window.add(prefix + k, _metric(v, k, self.device) / n)
            window.last[prefix + "lr"] = ph.optimizer.param_groups[0]["lr"]
            if stepped:
                ph.scaler.unscale_(ph.optimizer)
                grads = [p.grad for p in ph.params if p.grad is not None]
                if cfg.grad_clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(ph.params, cfg.grad_clip)
                else:
                    norm = torch.nn.utils.get_total_norm(grads)
                window.add(prefix + "grad_norm", local_value(norm).detach().float())
                ph.scaler.step(ph.optimizer)
                ph.scaler.update()
            with warnings.catch_warnings():  # a skipped phase still advances its schedule (step-indexed lr)
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                ph.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.ema_module)

    # ------------------------------------------------------------------------------------------ logging

    def _write_log(self, window: _Window) -> dict[str, Any]:
        keys = sorted(window.sums)
        values = torch.stack([window.sums[k].to(self.device, torch.float32).reshape(()) for k in keys])
        values = self.dist.all_reduce_mean(values).tolist()
        # loss/metrics were added once per micro-batch (already divided by n): average over steps present
        n = self.config.grad_accum
        avg = {}
        for k, v in zip(keys, values):
            per_step = window.counts[k] if k.endswith("grad_norm") else window.counts[k] / n
            avg[k] = v / max(per_step, 1)
        if not math.isfinite(avg["loss"]):
            raise DivergenceError(f"the loss is {avg['loss']} at step {self.step}; lower lr, set grad_clip, check "
                                  f"the data, or resume from an earlier checkpoint in {checkpoint_dir(self.out_dir)}")
        elapsed = time.perf_counter() - window.start
        record = {
            "step": self.step,
            "epoch": self.position.epoch,
            "loss": avg.pop("loss"),
            "metrics": {},
            "lr": window.last["lr"],
            "grad_norm": avg.pop("grad_norm", None),
            "throughput": window.samples / elapsed if elapsed > 0 else None,
            "elapsed": elapsed,
        }
        extra = {**avg, **{k: v for k, v in window.last.items() if k != "lr"}}
        record["metrics"] = {k: _finite_or_none(v) for k, v in sorted(extra.items())}
        if self.is_main:
            self._append(self._log_file, record)
            if self._tb is not None:
                for k in ("loss", "lr", "grad_norm", "throughput"):
                    if record[k] is not None:
                        self._tb.add_scalar(f"train/{k}", record[k], self.step)
                for k, v in record["metrics"].items():
                    if v is not None:
                        self._tb.add_scalar(f"train/{k}", v, self.step)
            for cb in self.callbacks:
                cb.on_log(self, record)
        return record

    def log_eval(self, metrics: dict[str, float | Tensor]) -> dict[str, Any]:
        """Record evaluation numbers (from a callback) for the current step in eval.jsonl / TensorBoard."""
        record = {"step": self.step, "metrics": {k: _finite_or_none(float(v)) for k, v in metrics.items()}}
        if self.is_main:
            if self._eval_file is not None:
                self._append(self._eval_file, record)
            else:
                with open(self.out_dir / EVAL_NAME, "a") as f:
                    self._append(f, record)
            if self._tb is not None:
                for k, v in record["metrics"].items():
                    if v is not None:
                        self._tb.add_scalar(f"eval/{k}", v, self.step)
        return record

    @staticmethod
    def _append(f, record: dict[str, Any]) -> None:
        try:
            f.write(json.dumps(record) + "\n")
            f.flush()
        except OSError as e:  # a full disk: say which log and how much space, in one line
            err = disk_full_error(e, Path(f.name), f"the line of step {record['step']} is missing (a resumed run "
                                  "drops a torn last line)")
            if err is None:
                raise
            raise err from None

    def _open_outputs(self) -> None:
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.out_dir / LOG_NAME, "a")
        self._eval_file = open(self.out_dir / EVAL_NAME, "a")
        if self.config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def _close_outputs(self) -> None:
        files, self._log_file, self._eval_file, self._tb = (self._log_file, self._eval_file, self._tb), None, None, None
        failed = None
        for f in files:
            try:
                if f is not None:
                    f.close()  # flushes what a full disk refused before: fails the same way, and closes anyway
            except OSError as e:
                failed = failed or disk_full_error(e, Path(getattr(f, "name", self.out_dir)), "its last line is "
                                                   "missing (a resumed run drops a torn last line)") or e
        if failed is not None:
            raise failed from None

    def _truncate_logs(self) -> None:
        """Drop log lines past the resumed step (a crash after the last checkpoint) and torn last lines."""
        for name in (LOG_NAME, EVAL_NAME):
            path = self.out_dir / name
            if not path.is_file():
                continue
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (collective); returns its path on rank 0, None elsewhere.

        Called by `fit`; outside `fit` it stores the RNG state as of the end of the last `fit` call."""
        rng_state = capture_rng_state(self.rng) if self._in_fit or self._rng_state is None else self._rng_state
        path = save_state(self, rng_state)
        if self.is_main:
            for cb in self.callbacks:
                cb.on_checkpoint(self, path)
        self.dist.barrier()
        return path

    def unsharded(self, module: nn.Module | None = None, prepare=None) -> nn.Module | None:
        """`module` (the task or a part of it, default the task) as a plain module with the current weights.

        Without sharding that is `module` itself. Under FSDP (collective: call it on every rank) rank 0 gets a
        fresh module built from `module.config` (`prepare(fresh)` runs first, e.g. to bind a tokenizer) with
        the gathered full weights, on the training device; the other ranks get None."""
        module = self.task if module is None else module
        if not self.dist.sharded:
            return module
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from .. import registry

        prefix = next(name for name, m in self.task.named_modules() if m is module)
        prefix = f"{prefix}." if prefix else ""
        full = get_model_state_dict(self.task, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return None
        fresh = registry.build(module.config)
        if prepare is not None:
            prepare(fresh)
        state = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
        load_state_dict_checked(fresh, state, source=f"the trained {type(module).__name__}")
        return fresh.to(self.device).train(module.training)

    def _check_config(self, saved: dict[str, Any], where: str, saved_world: int = 1) -> None:
        try:  # through from_dict so fields added after the checkpoint was written take their defaults
            saved = TrainConfig.from_dict(saved).to_dict()
        except ConfigError as e:
            raise CheckpointError(f"{where} holds a TrainConfig this argen cannot read ({e}); upgrade argen") from None
        now = self.config.to_dict()
        world = self.dist.world_size
        per_process = {"batch_size", "grad_accum"}  # may change with the process count: the global batch may not
        before = saved["batch_size"] * saved["grad_accum"] * saved_world
        after = now["batch_size"] * now["grad_accum"] * world
        if before != after:
            raise CheckpointError(f"{where} was trained with a global batch of {before} (batch_size "
                                  f"{saved['batch_size']} x grad_accum {saved['grad_accum']} x {saved_world} "
                                  f"process(es)), now {after} "
                                  f"({now['batch_size']} x {now['grad_accum']} x {world}); keep the global batch, "
                                  f"e.g. {fit_world_hint(now, before, world)}")
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}" for k, v in now.items()
                 if k not in RESUME_MUTABLE and k not in per_process and saved.get(k) != v]
        if diffs:
            raise CheckpointError(f"{where} was trained with a different config ({'; '.join(diffs)}); resume with "
                                  f"the same values (only {', '.join(sorted(RESUME_MUTABLE))} may change) or start "
                                  "a new out_dir")


# ---------------------------------------------------------------------------------------------- helpers

def fit_world_hint(now: dict[str, Any], total: int, world: int) -> str:
    """How to reach the global batch `total` on `world` processes from config `now`, as a --set override."""
    if total % (now["batch_size"] * world) == 0:
        return f"train.grad_accum={total // (now['batch_size'] * world)}"
    if total % (now["grad_accum"] * world) == 0:
        return f"train.batch_size={total // (now['grad_accum'] * world)}"
    return f"a batch_size x grad_accum of {total / world:g} per process (not a whole number: use another process count)"


def config_json(config: TrainConfig) -> str:
    from ..config import to_json

    return to_json(config) + "\n"


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors in (nested) tuples/lists/dicts/dataclasses with `.to` to `device`; leave the rest."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if dataclasses.is_dataclass(batch) and hasattr(batch, "to"):
        return batch.to(device)
    return batch


def _check_output(out: Any, phase: str) -> Tensor:
    if not isinstance(out, LossOutput):
        raise TypeError(f"task forward (phase '{phase}') must return argen.types.LossOutput, got {type(out).__name__}")
    if not isinstance(out.loss, Tensor) or out.loss.numel() != 1:
        raise TypeError(f"LossOutput.loss (phase '{phase}') must be a scalar tensor, got "
                        f"{getattr(out.loss, 'shape', type(out.loss).__name__)}")
    return out.loss.reshape(())


def _metric(v: Tensor | float, key: str, device: torch.device) -> Tensor:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"metric '{key}' must be a scalar, got shape {tuple(v.shape)}")
        return v.detach().float().reshape(()).to(device)
    return torch.tensor(float(v), device=device)


def _finite_or_none(v: float) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None
