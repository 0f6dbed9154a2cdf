"""Recipes: train a tokenizer, or a generator on a trained tokenizer's tokens, with one call. The CLI's
`argen tokenizer train` and `argen train` are thin argv layers over these two functions.

    run = argen.train_tokenizer("vq-tiny", data="fashion-mnist", out="runs/vq", steps=300)
    run = argen.train_generator("fmnist-raster-tiny", data="fashion-mnist", tokenizer="runs/vq", out="runs/ar")
    images = run.pipeline([0, 1, 2], seed=0)

A recipe picks the defaults a short run needs (optimizer, schedule, warm-up, logging and checkpoint cadence),
fits the generator to the tokenizer (vocabulary, token grids, next-scale's quantizer) and the conditioner to
the data (classes and their names), writes a run record (`run.json`) so `resume=True` continues exactly, and
returns what it wrote. Messages go to `log` (the CLI passes print); the library itself never prints.

Overrides are dotted `key=value` strings routed by their first component (`route_overrides`, the same rule
for every command): `train.*` -> TrainConfig, `loss.*` / `task.*` -> the tokenizer's training objective,
`tokenizer.*`, `conditioner.*`, `generator.*`, `sampling.*` -> that part of the model; a key without one of
these prefixes belongs to the recipe's subject (the tokenizer for `train_tokenizer`, the generator for
`train_generator`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..config import Config, apply_overrides, to_dict
from ..errors import CheckpointError, ConfigError
from .callbacks import Callback
from .distributed import Distributed
from .lock import holds_run_lock

RUN_FILE = "run.json"
TOKENIZER_DIR = "tokenizer"
PIPELINE_DIR = "pipeline"
GROUPS = ("train", "task", "tokenizer", "conditioner", "generator", "sampling")
_ALIASES = {"loss": "task"}  # loss.* is the task's `loss` field: kept in the key, routed to the task

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class LogLines(Callback):
    """A Trainer callback that reports each log record as one line (step, loss, key metrics, throughput and
    the time left), for runs without a progress bar: logs, CI, a terminal that is not a TTY."""

    _KEYS = {"nll": "nll", "bits_per_token": "bits/token", "bits_per_dim": "bits/dim", "mse": "mse", "pixel": "pixel",
             "usage": "usage", "perplexity": "perplexity", "kl": "kl"}

    def __init__(self, log: Log, total: int):
        import time

        self.log, self.total, self._clock, self._start = log, total, time.monotonic, None

    def on_fit_start(self, trainer) -> None:
        self._start, self._first = self._clock(), trainer.step

    def on_log(self, trainer, record: dict[str, Any]) -> None:
        step, done = record["step"], record["step"] - self._first
        elapsed = self._clock() - self._start
        left = elapsed / done * (self.total - step) if done > 0 else float("nan")
        m = record.get("metrics", {})
        extra = " ".join(f"{name} {m[k]:.4g}" for k, name in self._KEYS.items() if isinstance(m.get(k), (int, float)))
        self.log(f"step {step}/{self.total}: loss {record['loss']:.4g} {extra}".rstrip()
                 + f" ({elapsed:.0f} s, ~{left:.0f} s left)")

def _distributed(distributed: Distributed | None, device: torch.device, saved: dict[str, Any] | None, train_cfg,
                 log: Log):
    """The strategy (set up: it knows its rank) and the TrainConfig for it: a run resumed on another number of
    processes keeps its global batch (grad_accum, else batch_size, rescaled; see `keep_global_batch`).

    Under several processes every rank trains; rank 0 alone writes run.json, the token cache, the saved
    model, the sample grid and the logs (the CLI gives the other ranks a silent `log`)."""
    from .config import keep_global_batch

    dist = distributed or Distributed()
    dist.setup(device)
    before = int((saved or {}).get("world_size", 1))
    if saved is not None and before != dist.world_size:
        fitted = keep_global_batch(train_cfg, before, dist.world_size)
        if fitted != train_cfg:
            log(f"resuming a run of {before} process(es) on {dist.world_size}: batch_size {fitted.batch_size} x "
                f"grad_accum {fitted.grad_accum} per process keeps its global batch of "
                f"{train_cfg.batch_size * train_cfg.grad_accum * before}")
        train_cfg = fitted
    return dist, train_cfg


def _callbacks(log: Log, progress: bool, total: int) -> list:
    """Progress lines through `log` unless a progress bar shows the run (and the caller wants messages)."""
    return [] if progress or log is _quiet else [LogLines(log, total)]


# ----------------------------------------------------------------------------- overrides

def route_overrides(items: Sequence[str], subject: str) -> dict[str, list[str]]:
    """Split `key=value` overrides by their first key component into GROUPS (keys keep their full path, except
    `train.` and `task.`, which are stripped because those configs stand alone); unprefixed keys go to
    `subject` ("tokenizer" or "generator")."""
    if subject not in GROUPS:
        raise ValueError(f"unknown override subject {subject!r}")
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. generator.depth=20")
        key = item.split("=", 1)[0].strip()
        head = key.split(".", 1)[0]
        group = _ALIASES.get(head, head)
        if group not in GROUPS or "." not in key:
            out[subject].append(f"{subject}.{item.strip()}")
        elif group in ("train", "task") and head != "loss":
            out[group].append(item.strip()[len(head) + 1:])
        else:
            out[group].append(item.strip())
    return out


def _refuse(groups: dict[str, list[str]], names: Sequence[str], why: str) -> None:
    for name in names:
        if groups[name]:
            raise ConfigError(f"--set {groups[name][0]}: {why}")


# ----------------------------------------------------------------------------- run directories

def _run_record(out: Path) -> dict[str, Any] | None:
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg}); the run record is corrupt") from None


def _check_fresh_or_resume(out: Path, resume: bool) -> None:
    from .checkpoint import checkpoint_dir, find_latest

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for the run")
    if not resume and find_latest(checkpoint_dir(out)) is not None:
        raise ConfigError(f"{out} already holds a training run; add --resume to continue it or choose a new --out")


def _check_resume(saved: dict[str, Any] | None, record: dict[str, Any], keys: Sequence[str], out: Path,
                  what: str) -> None:
    """Refuse to resume a run whose recorded settings differ from this call's."""
    for key in keys if saved is not None else ():
        if saved.get(key) != record[key]:
            raise ConfigError(f"--resume: {key} differs from the run in {out}; resume with the same {what}")


def find_tokenizer(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """A saved tokenizer directory and its run record (empty if `path` is a saved tokenizer itself)."""
    path = Path(path)
    if (path / TOKENIZER_DIR / "config.json").is_file():
        return path / TOKENIZER_DIR, _run_record(path) or {}
    if (path / "config.json").is_file():
        return path, {}
    raise CheckpointError(f"{path} holds no trained tokenizer (no {TOKENIZER_DIR}/config.json or config.json); "
                          "pass the --out directory of `argen tokenizer train`")


def find_pipeline(path: str | os.PathLike) -> Path:
    """A saved pipeline directory: `path` itself or the pipeline/ of a `train_generator` run."""
    path = Path(path)
    if (path / PIPELINE_DIR / "config.json").is_file():
        return path / PIPELINE_DIR
    if (path / "config.json").is_file():
        return path
    raise CheckpointError(f"{path} holds no saved pipeline (no config.json or {PIPELINE_DIR}/config.json); "
                          "pass a directory written by `argen train` or Pipeline.save")


def load_tokenizer(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """A trained tokenizer (from a run directory or a saved tokenizer), frozen, in eval mode."""
    from ..saving import load
    from ..tokenizers.base import Tokenizer

    tok_dir, _ = find_tokenizer(path)
    tok = load(tok_dir, map_location=device)
    if not isinstance(tok, Tokenizer):
        raise CheckpointError(f"{tok_dir} holds a {type(tok).__name__}, not a tokenizer")
    tok.requires_grad_(False)
    return tok.eval()


# ----------------------------------------------------------------------------- data

@dataclass(frozen=True)
class DataOptions:
    """How a recipe reads an image folder: `check` ("verify" headers / "decode" every pixel up front),
    `on_error` ("skip" unreadable files, logged, or "raise"), `max_pixels` per image (None: no bound).
    The named datasets (fashion-mnist, emoji) read installed files and ignore them."""

    check: str = "verify"
    on_error: str = "skip"
    max_pixels: int | None = None  # None: the data module's default bound


def _log_skip(log: Log, path: str, reason: str) -> None:  # module level: picklable for DataLoader workers
    log(f"skipped unreadable image {path}: {reason}")


def open_dataset(data: str, split: str, resolution: int, options: DataOptions, log: Log):
    """`load_dataset` with the recipe's data options, reporting what the scan left out and how it split."""
    from functools import partial

    from ..data import load_dataset

    extra = {} if options.max_pixels is None else {"max_pixels": options.max_pixels}
    ds = load_dataset(data, split=split, resolution=resolution, check=options.check, on_error=options.on_error,
                      on_skip=partial(_log_skip, log), **extra)
    for line in getattr(ds, "warnings", ()):
        log(f"warning: {line}")
    skipped = getattr(ds, "skipped", ())
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in list(skipped)[:3])
        log(f"left out {len(skipped)} unreadable file(s) of {data}:{split}: {shown}" + (" ..." if len(skipped) > 3 else ""))
    if getattr(ds, "split_note", None):
        log(ds.split_note)
    return ds


# ----------------------------------------------------------------------------- tokenizers

@dataclass
class TokenizerRun:
    out: Path
    tokenizer_dir: Path
    tokenizer: nn.Module
    records: list[dict[str, Any]]
    reconstructions: Path


def _tokenizer_configs(preset: str | Config, overrides: Sequence[str], resolution: int | None, steps: int | None,
                       batch_size: int | None, lr: float | None, seed: int | None, progress: bool,
                       device: torch.device, disc_start: int | None):
    from ..presets import get_config
    from ..tokenizers.base import TokenizerConfig
    from ..tokenizers.task import TokenizerTaskConfig
    from .config import TrainConfig

    groups = route_overrides(overrides, "tokenizer")
    _refuse(groups, ("conditioner", "generator", "sampling"), "a tokenizer run has no conditioner, generator or "
            "sampling options; use tokenizer.*, train.* or loss.* keys")
    cfg = get_config(preset) if isinstance(preset, str) else preset
    if not isinstance(cfg, TokenizerConfig):
        name = preset if isinstance(preset, str) else type(preset).__name__
        raise ConfigError(f"'{name}' is not a tokenizer preset; pick one of the tokenizer presets (vq-tiny, fsq-tiny, "
                          "vae-tiny, ...) from `argen presets`")
    tok_over = [item[len("tokenizer."):] for item in groups["tokenizer"]]
    if tok_over:
        cfg = apply_overrides(cfg, tok_over)
    if resolution is not None:  # the one record of the training size is the tokenizer's config
        try:
            cfg = cfg.resized(resolution)
        except ValueError as e:
            raise ConfigError(f"--resolution {resolution}: {e}") from None
    f = cfg.downsample
    if cfg.resolution % f:
        raise ConfigError(f"resolution {cfg.resolution} is not a multiple of the tokenizer's downsampling factor {f}; "
                          f"use e.g. {max(f, round(cfg.resolution / f) * f)}")
    steps = _overridden_steps(groups["train"], 300 if steps is None else steps)
    train_cfg = TrainConfig(steps=steps, batch_size=32 if batch_size is None else batch_size,
                            lr=2e-4 if lr is None else lr, betas=(0.5, 0.9), weight_decay=0.0, grad_clip=1.0,
                            seed=0 if seed is None else seed, log_every=max(1, min(50, steps // 10)),
                            ckpt_every=max(1, steps // 2), keep_checkpoints=2, progress=progress,
                            precision="bf16" if device.type == "cuda" else "fp32")
    if groups["train"]:
        train_cfg = apply_overrides(train_cfg, groups["train"])
    # Short runs: the discriminator joins halfway (taming starts it late too) unless set explicitly.
    start = train_cfg.steps // 2 if disc_start is None else disc_start
    task_cfg = apply_overrides(TokenizerTaskConfig(), [f"loss.disc_start={start}"] + groups["task"])
    return cfg, train_cfg, task_cfg


@holds_run_lock  # one run per --out: a second one is refused at once (its log would be lost)
def train_tokenizer(preset: str | Config, *, out: str | os.PathLike, data: str = "fashion-mnist",
                    resolution: int | None = None, steps: int | None = None, batch_size: int | None = None,
                    lr: float | None = None, seed: int | None = None, resume: bool = False,
                    overrides: Sequence[str] = (), progress: bool = False, device: torch.device | str = "cpu",
                    data_options: DataOptions = DataOptions(), log: Log = _quiet,
                    distributed: Distributed | None = None) -> TokenizerRun:
    """Train a tokenizer preset (or config) on `data`; writes OUT/tokenizer, OUT/reconstructions.png,
    OUT/log.jsonl, OUT/checkpoints/ and OUT/run.json. Defaults: 300 steps, batch 32, lr 2e-4 (betas 0.5, 0.9),
    the discriminator from half the run. `resolution` sets the tokenizer's config (None: the preset's).
    `distributed` (DDP/FSDP under torchrun): every rank trains, rank 0 alone writes (see `_distributed`)."""
    from .. import registry
    from ..saving import atomic_write_text, save
    from ..tokenizers.task import TokenizerTask
    from .loop import Trainer

    device = torch.device(device)
    out = Path(out)
    _check_fresh_or_resume(out, resume)
    saved = _run_record(out) if resume else None
    disc_start = saved["task"]["loss"]["disc_start"] if saved and "task" in saved else None
    tok_cfg, train_cfg, task_cfg = _tokenizer_configs(preset, overrides, resolution, steps, batch_size, lr, seed,
                                                      progress, device, disc_start)
    dist, train_cfg = _distributed(distributed, device, saved, train_cfg, log)
    dataset = open_dataset(data, "train", tok_cfg.resolution, data_options, log)
    tok_cfg = _fit_channels(tok_cfg, dataset, overrides, log)
    record = {"preset": preset if isinstance(preset, str) else type(preset).kind, "data": data,
              "overrides": list(overrides), "tokenizer": {"kind": type(tok_cfg).kind, **to_dict(tok_cfg)},
              "task": to_dict(task_cfg), "train": to_dict(train_cfg), "world_size": dist.world_size}
    _check_resume(saved, record, ("data", "tokenizer", "task"), out, "preset, data, resolution and overrides")
    torch.manual_seed(train_cfg.seed)  # weight init (the Trainer restores its own RNG state on resume)
    tokenizer = registry.build(tok_cfg)
    task = TokenizerTask(tokenizer, task_cfg).to(device)
    log(task.loss.perceptual_status)
    trainer = Trainer(train_cfg, task, dataset, out, resume=resume, device=device, distributed=dist,
                      callbacks=_callbacks(log, train_cfg.progress, train_cfg.steps))
    if dist.is_main:
        atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2) + "\n")
    log(f"training {record['preset']} ({sum(p.numel() for p in tokenizer.parameters()) / 1e6:.2f}M params) on "
        f"{data} at {tok_cfg.resolution}px, steps {trainer.step} -> {train_cfg.steps}, device {device}")
    records = trainer.fit()
    if records and train_cfg.progress:  # without a bar, LogLines reported every record already
        m = records[-1]["metrics"]
        extra = " ".join(f"{k} {m[k]:.4g}" for k in ("pixel", "usage", "perplexity", "kl") if m.get(k) is not None)
        log(f"step {records[-1]['step']}: loss {records[-1]['loss']:.4g} {extra}")
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.ema_module)
    tokenizer = trainer.unsharded(tokenizer)  # FSDP: a plain copy on rank 0 (collective)
    if not dist.is_main:
        return TokenizerRun(out, out / TOKENIZER_DIR, task.tokenizer, records, out / "reconstructions.png")
    tokenizer.eval()
    tok_dir = save(tokenizer, out / TOKENIZER_DIR, extra={"data": data})
    grid = write_reconstructions(tokenizer, data, out / "reconstructions.png", device, data_options=data_options,
                                 log=log)
    log(f"tokenizer saved to {tok_dir}")
    log(f"reconstructions (top: originals, bottom: reconstructions) in {grid}")
    log(f"checkpoints in {out / 'checkpoints'}, log in {out / 'log.jsonl'}")
    return TokenizerRun(out, tok_dir, tokenizer, records, grid)


def write_reconstructions(tokenizer: nn.Module, data: str, path: Path, device, n: int = 16,
                          data_options: DataOptions = DataOptions(), log: Log = _quiet) -> Path:
    """Originals (top rows) and their reconstructions (bottom rows) of the first `n` test images (a folder
    without a test split uses its held-out slice)."""
    from ..imageio import save_grid

    res = tokenizer.config.resolution
    ds = open_dataset(data, "test", res, data_options, log)
    images = torch.stack([ds[i][0] for i in range(min(n, len(ds)))]).to(device)
    with torch.no_grad():
        recon = tokenizer.decode(tokenizer.encode(images), grid=tokenizer.layout_for(res, res).grid)
    return save_grid(torch.cat([images, recon.float()]).cpu(), path, nrow=8)


# ----------------------------------------------------------------------------- generators

@dataclass
class GeneratorRun:
    out: Path
    pipeline_dir: Path
    pipeline: nn.Module
    records: list[dict[str, Any]]
    fitted: dict[str, Any] = field(default_factory=dict)  # config values changed to fit the tokenizer / data
    samples: Path | None = None


class FirstN:
    """The first n items of an image dataset, keeping the attributes the token cache records."""

    def __init__(self, ds, n: int):
        self.ds, self.n = ds, min(n, len(ds))
        self.name, self.split, self.resolution = f"{ds.name}[:{self.n}]", ds.split, ds.resolution
        self.classes, self.labels = ds.classes, ds.labels[: self.n]
        captions = getattr(ds, "captions", None)
        self.captions = None if captions is None else list(captions)[: self.n]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.ds[i]


def _initial_pipeline(preset: str | Config, tokenizer: nn.Module):
    """The preset as a PipelineConfig around the trained tokenizer (a generator preset gets a class
    conditioner that the data fits later)."""
    from ..conditioning.labels import ClassConditionerConfig
    from ..generators.base import GeneratorConfig
    from ..pipeline import PipelineConfig
    from ..presets import get_config

    cfg = get_config(preset) if isinstance(preset, str) else preset
    if isinstance(cfg, GeneratorConfig):
        return PipelineConfig(tokenizer=tokenizer.config, generator=cfg,
                              conditioner=ClassConditionerConfig(dim=cfg.cond_dim, num_classes=0))
    if not isinstance(cfg, PipelineConfig):
        name = preset if isinstance(preset, str) else type(preset).__name__
        raise ConfigError(f"'{name}' is a {type(cfg).__name__}; `argen train` takes a pipeline or generator preset "
                          "(e.g. fmnist-raster-tiny, llamagen-tiny); tokenizers train with `argen tokenizer train`")
    return cfg.replace(tokenizer=tokenizer.config)


def fit_pipeline(cfg, tokenizer: nn.Module, dataset) -> tuple[Any, dict[str, Any]]:
    """The pipeline config with the generator fitted to the tokenizer's tokens and the conditioner to the
    dataset's classes; returns (config, {field: new value} of what changed)."""
    from ..conditioning.labels import ClassConditionerConfig

    layout = tokenizer.layout
    gen, changes = cfg.generator, {}
    if layout.vocab_size is not None and getattr(gen, "vocab_size", None) not in (None, layout.vocab_size):
        changes["generator.vocab_size"] = layout.vocab_size
    if layout.latent_dim is not None and getattr(gen, "token_dim", None) not in (None, layout.latent_dim):
        changes["generator.token_dim"] = layout.latent_dim
    if tuple(map(tuple, gen.scales)) != tuple(map(tuple, layout.scales)):
        changes["generator.scales"] = tuple(tuple(s) for s in layout.scales)
    tok_quantizer = getattr(tokenizer, "quantizer", None)
    if hasattr(gen, "quantizer") and tok_quantizer is not None and gen.quantizer != tok_quantizer.config:
        changes["generator.quantizer"] = tok_quantizer.config  # next-scale builds its inputs with it
    cond = cfg.conditioner
    if isinstance(cond, ClassConditionerConfig):
        names = tuple(dataset.classes)
        if cond.num_classes != len(names):
            changes["conditioner.num_classes"] = len(names)
        if cond.class_names != names:
            changes["conditioner.class_names"] = names
    try:
        gen = gen.replace(**{k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("generator.")})
        cond = cond.replace(**{k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("conditioner.")})
        return cfg.replace(tokenizer=tokenizer.config, generator=gen, conditioner=cond), changes
    except ValueError as e:
        raise ConfigError(f"cannot fit generator {type(gen).kind} to the tokenizer/data ({e})") from None


def fit_x0_clip(cfg, tokens) -> tuple[Any, dict[str, Any]]:
    """A diffusion-head generator's config with `head.x0_clip` (unset) set to the training tokens' largest |value|,
    so sampling never predicts a clean token outside the data's range (heads/diffusion.py says why a small head
    needs it); returns (config, {field: value} of what changed). Unchanged without a head, with a bound given
    (`--set generator.head.x0_clip=...`; 0 = unclipped) or for tokens whose range is unknown."""
    from ..heads.diffusion import DiffusionHeadConfig

    head = getattr(cfg.generator, "head", None)
    bound = getattr(tokens, "abs_max", None)
    if not isinstance(head, DiffusionHeadConfig) or head.x0_clip is not None or bound is None:
        return cfg, {}
    bound = float(f"{bound:.6g}")  # readable in run.json; the clamp never needs more digits
    gen = cfg.generator.replace(head=head.replace(x0_clip=bound))
    return cfg.replace(generator=gen), {"generator.head.x0_clip": bound}


def _generator_train_config(steps, batch_size, lr, seed, progress, device, train_over):
    from .config import TrainConfig

    steps = _overridden_steps(train_over, 1000 if steps is None else steps)
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    cfg = TrainConfig(steps=steps, batch_size=64 if batch_size is None else batch_size, lr=3e-4 if lr is None else lr,
                      betas=(0.9, 0.95), weight_decay=0.05, warmup_steps=min(100, steps // 10), schedule="cosine",
                      min_lr_ratio=0.1, grad_clip=1.0, seed=0 if seed is None else seed,
                      log_every=max(1, min(50, steps // 10)), ckpt_every=max(1, steps // 2), keep_checkpoints=2,
                      progress=progress, precision="bf16" if device.type == "cuda" else "fp32")
    return apply_overrides(cfg, train_over) if train_over else cfg


def _overridden_steps(train_over: Sequence[str], steps: int) -> int:
    """The run length after `train.steps=...` (the defaults that follow it, warm-up and cadences, use it)."""
    from ..config import parse_assignment

    for item in train_over:
        key, value = parse_assignment(item)
        if key == "steps":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"train.steps must be a whole number of optimizer steps, got {value!r}")
            steps = value
    return steps


def generator_configs(preset: str | Config, tokenizer: nn.Module, dataset, overrides: Sequence[str] = (), *,
                      steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
                      seed: int | None = None, progress: bool = False, device: torch.device | str = "cpu"):
    """(pipeline config, TrainConfig, fitted changes) of a generator run: the preset around the trained
    tokenizer, the overrides applied, the generator fitted to the tokenizer and the conditioner to `dataset`."""
    groups = route_overrides(overrides, "generator")
    cfg = _initial_pipeline(preset, tokenizer)
    model_over = groups["generator"] + groups["conditioner"] + groups["sampling"]
    if model_over:
        cfg = apply_overrides(cfg, model_over)
    train_cfg = _generator_train_config(steps, batch_size, lr, seed, progress, torch.device(device), groups["train"])
    cfg, changes = fit_pipeline(cfg, tokenizer, dataset)
    return cfg, train_cfg, changes


def _fit_channels(tok_cfg, dataset, overrides: Sequence[str], log: Log):
    """A tokenizer trained on greyscale data decodes greyscale (`channels=1`), unless `--set channels=` says."""
    chosen = any(o.split("=", 1)[0].strip().endswith("channels") for o in overrides)
    if getattr(dataset, "grey", False) and tok_cfg.channels == 3 and not chosen:
        log("the training images are greyscale: the tokenizer decodes greyscale (channels=1; --set channels=3 "
            "keeps three channels)")
        return tok_cfg.replace(channels=1)
    return tok_cfg


def _text_encoder(conditioner_cfg, device):
    """The frozen text encoder a text conditioner reads (its features are cached with the tokens), or None."""
    from ..conditioning.text import TextConditionerConfig, load_text_encoder

    if not isinstance(conditioner_cfg, TextConditionerConfig):
        return None
    return load_text_encoder(conditioner_cfg.encoder, conditioner_cfg.max_length, str(device))


def grid_conditions(conditioner: nn.Module, per: int, dataset=None) -> tuple[Any, int]:
    """Conditions for a sample grid and its row length: `per` of every class (one row per class), of the
    first 8 distinct captions of `dataset` for a text conditioner, or 8 x per unconditional."""
    n = getattr(conditioner, "num_classes", 0)
    if n:
        return [c for c in range(n) for _ in range(per)], per
    captions = list(dict.fromkeys(getattr(dataset, "captions", None) or []))[:8]
    if type(conditioner.config).kind == "text" and captions:
        return [c for c in captions for _ in range(per)], per
    return conditioner.null(8 * per), 8


@holds_run_lock
def train_generator(preset: str | Config, *, out: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                    data: str = "fashion-mnist", steps: int | None = None, batch_size: int | None = None,
                    lr: float | None = None, seed: int | None = None, max_images: int | None = None,
                    cache: str | os.PathLike | None = None, resume: bool = False, samples_per_class: int = 4,
                    overrides: Sequence[str] = (), progress: bool = False, device: torch.device | str = "cpu",
                    data_options: DataOptions = DataOptions(), log: Log = _quiet,
                    distributed: Distributed | None = None) -> GeneratorRun:
    """Train a generator on the tokens of a frozen trained tokenizer (`tokenizer`: a `train_tokenizer` run or
    a saved tokenizer; None only for tokenizers without weights, e.g. the pixel tokenizer). Writes
    OUT/pipeline (the saved Pipeline), OUT/samples.png, OUT/log.jsonl, OUT/checkpoints/, OUT/run.json and the
    token cache OUT/tokens (or `cache`). Defaults: 1000 steps, batch 64, AdamW lr 3e-4 with warm-up + cosine.
    `distributed` (DDP/FSDP under torchrun): every rank trains, rank 0 alone encodes the token cache and
    writes (see `_distributed`)."""
    from .. import registry
    from ..data import TokenCacheDataset, TokenShards, build_token_cache, fingerprint, is_shard_dir
    from ..generators.task import GeneratorTask
    from ..imageio import save_grid
    from ..pipeline import Pipeline
    from ..saving import atomic_write_text
    from .config import TrainConfig
    from .loop import Trainer

    device = torch.device(device)
    out = Path(out)
    _check_fresh_or_resume(out, resume)
    if samples_per_class < 0:
        raise ConfigError(f"samples_per_class must be >= 0 (0 = no sample grid), got {samples_per_class}")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images must be >= 1, got {max_images}")
    saved = _run_record(out) if resume else None
    groups = route_overrides(overrides, "generator")
    _refuse(groups, ("tokenizer",), "the tokenizer is trained already (its config comes with --tokenizer); set "
            "tokenizer options when training it")
    _refuse(groups, ("task",), "loss.* / task.* keys are tokenizer-training options")

    tok_dir = None
    if tokenizer is None:
        from ..presets import get_config

        base = get_config(preset) if isinstance(preset, str) else preset
        if not hasattr(base, "tokenizer"):
            raise ConfigError("a generator preset needs a trained tokenizer: pass --tokenizer runs/tok")
        tok = registry.build(base.tokenizer)
        if any(True for _ in tok.parameters()):
            raise ConfigError(f"the {type(base.tokenizer).kind} tokenizer has weights: train it first "
                              "(`argen tokenizer train --preset ... --out runs/tok`) and pass --tokenizer runs/tok")
        tok = tok.to(device).eval()
    else:
        tok = load_tokenizer(tokenizer, device)
        tok_dir = str(find_tokenizer(tokenizer)[0])

    dataset = open_dataset(data, "train", tok.config.resolution, data_options, log)
    if max_images:
        dataset = FirstN(dataset, max_images)
    if saved is not None:  # a resumed run's classes (and so its label ids) must be the data's
        names = saved.get("pipeline", {}).get("conditioner", {}).get("class_names")
        if names:
            from ..data import check_classes

            check_classes(dataset, tuple(names), what=f"the run in {out}")
    cfg, train_cfg, changes = generator_configs(preset, tok, dataset, overrides, steps=steps, batch_size=batch_size,
                                                lr=lr, seed=seed, progress=progress, device=device)
    if saved is not None and "train" in saved:  # keep the run's schedule; steps, logging, ... may change
        train_cfg = TrainConfig.from_dict(saved["train"]).replace(
            steps=train_cfg.steps if steps is not None else saved["train"]["steps"], progress=progress)
        if groups["train"]:
            train_cfg = apply_overrides(train_cfg, groups["train"])
    dist, train_cfg = _distributed(distributed, device, saved, train_cfg, log)

    cache_dir = Path(cache) if cache else out / "tokens"
    log(f"encoding {len(dataset)} {data} images at {tok.config.resolution}px into the token cache {cache_dir} (once)")
    encode = lambda images: tok.encode(images.to(device))  # noqa: E731
    text_encoder = _text_encoder(cfg.conditioner, device)
    if is_shard_dir(cache_dir):  # token shards (`argen data OUT/tokens --write-shards DIR`): read, never built
        tokens = TokenShards(cache_dir, tokenizer_hash=fingerprint(tok), text_encoder=text_encoder)
    else:
        if dist.is_main:  # one writer; the other ranks wait for the finished cache
            build_token_cache(encode, dataset, cache_dir, batch_size=128, tokenizer_hash=fingerprint(tok),
                              progress=progress, text_encoder=text_encoder)
        dist.barrier()
        tokens = TokenCacheDataset(cache_dir, tokenizer_hash=fingerprint(tok), text_encoder=text_encoder)
    cfg, fitted = fit_x0_clip(cfg, tokens)
    changes.update(fitted)
    record = {"preset": preset if isinstance(preset, str) else type(preset).kind, "data": data,
              "max_images": max_images, "tokenizer": tok_dir, "overrides": list(overrides),
              "pipeline": to_dict(cfg), "train": to_dict(train_cfg), "world_size": dist.world_size}
    _check_resume(saved, record, ("data", "max_images", "pipeline"), out,
                  "preset, data, tokenizer, max_images and overrides")

    torch.manual_seed(train_cfg.seed)  # weight init (the Trainer restores its own RNG state on resume)
    generator = registry.build(cfg.generator)
    conditioner = registry.build(cfg.conditioner)
    generator.bind_tokenizer(tok)
    trainer = Trainer(train_cfg, GeneratorTask(generator, conditioner), tokens, out, resume=resume, device=device,
                      distributed=dist, callbacks=_callbacks(log, train_cfg.progress, train_cfg.steps))
    if dist.is_main:
        atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2) + "\n")
    if changes:
        log("fitted to the tokenizer/data: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    params = sum(p.numel() for n, p in generator.named_parameters() if not n.startswith(generator.tokenizer_state_prefixes()))
    log(f"training {type(cfg.generator).kind} ({params / 1e6:.2f}M params) on {len(tokens)} token sequences of "
        f"{cfg.generator.num_tokens} tokens, steps {trainer.step} -> {train_cfg.steps}, device {device}")
    records = trainer.fit()
    if records and train_cfg.progress:
        m = records[-1]["metrics"]
        log(f"step {records[-1]['step']}: loss {records[-1]['loss']:.4f} nats/token, "
            f"{m.get('bits_per_token', float('nan')):.4f} bits/token")
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.ema_module)
    if dist.sharded:  # FSDP: plain copies on rank 0 (collective)
        generator = trainer.unsharded(generator, prepare=lambda g: g.bind_tokenizer(tok))
        conditioner = trainer.unsharded(conditioner)
    if not dist.is_main:
        return GeneratorRun(out, out / PIPELINE_DIR, None, records, changes, None)
    pipe = Pipeline.from_parts(tok, conditioner, generator, sampling=cfg.sampling).eval()
    pipe_dir = pipe.save(out / PIPELINE_DIR)
    log(f"pipeline saved to {pipe_dir}")
    samples = None
    if samples_per_class > 0:
        conds, nrow = grid_conditions(conditioner, samples_per_class, dataset)
        samples = save_grid(pipe(conds, seed=0).cpu(), out / "samples.png", nrow=nrow)
        log(f"samples (one row per class or caption, seed 0, cfg {cfg.sampling.cfg}) in {samples}")
    log(f"checkpoints in {out / 'checkpoints'}, log in {out / 'log.jsonl'}")
    return GeneratorRun(out, pipe_dir, pipe, records, changes, samples)


__all__ = ["route_overrides", "train_tokenizer", "train_generator", "TokenizerRun", "GeneratorRun", "fit_pipeline",
           "fit_x0_clip",
           "DataOptions", "open_dataset",
           "generator_configs",
           "find_tokenizer", "find_pipeline", "load_tokenizer", "write_reconstructions", "grid_conditions", "FirstN"]
