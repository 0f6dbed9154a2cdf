"""`argen train`: train a generator on tokens of a frozen, already trained tokenizer; save a pipeline.

    argen tokenizer train --preset vq-tiny --data fashion-mnist --steps 300 --out runs/vq
    argen train --preset fmnist-raster-tiny --data fashion-mnist --tokenizer runs/vq --steps 2000 --out runs/ar
    argen train ... --out runs/ar --steps 4000 --resume          # continue (exact resume via the Trainer)
    argen sample runs/ar --per-class 8 --seed 0 --cfg 2 --out samples/

The dataset is encoded once into a memmap token cache (`OUT/tokens`, or --cache), reused on resume and
refused if it was built by another tokenizer. The generator's vocab size, token grid and number of classes
are taken from the tokenizer and the dataset. `--set` routes dotted overrides: `train.*` -> TrainConfig
(batch_size, lr, warmup_steps, ema_decay, ...), everything else -> the pipeline preset (generator.depth=4,
cfg=3, ...). Outputs: OUT/pipeline (the saved Pipeline), OUT/samples.png, OUT/log.jsonl, OUT/checkpoints/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ._common import add_device_argument, add_set_argument, add_threads_argument, apply_threads, resolve_device, say

COMMAND = "train"
HELP = "train a generator (raster, random-order, next-scale, ...) on a dataset's tokens; saves a pipeline"
RUN_FILE = "run.json"
PIPELINE_DIR = "pipeline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", required=True, help="pipeline or generator preset, e.g. fmnist-raster-tiny (`argen presets`)")
    p.add_argument("--data", default="fashion-mnist", help="dataset name (fashion-mnist, emoji) or image folder")
    p.add_argument("--tokenizer", default=None,
                   help="trained tokenizer: the --out directory of `argen tokenizer train` or a saved tokenizer "
                        "(optional only for tokenizers without weights, e.g. the pixel tokenizer)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1000)")
    p.add_argument("--batch-size", type=int, default=None, help="micro-batch size (default 64)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4, warm-up + cosine)")
    p.add_argument("--seed", type=int, default=None, help="seed of the run (default 0)")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N training images (quick runs)")
    p.add_argument("--cache", default=None, help="token cache directory (default OUT/tokens)")
    p.add_argument("--out", required=True, help="run directory: pipeline/, samples.png, log.jsonl, checkpoints/")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--samples-per-class", type=int, default=4, help="images per class in OUT/samples.png (0 = none)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    add_set_argument(p)
    add_device_argument(p)
    add_threads_argument(p)


class _FirstN:
    """The first n items of an image dataset, keeping the attributes the token cache records."""

    def __init__(self, ds, n: int):
        self.ds, self.n = ds, min(n, len(ds))
        self.name, self.split, self.resolution = f"{ds.name}[:{self.n}]", ds.split, ds.resolution
        self.classes, self.labels = ds.classes, ds.labels[: self.n]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.ds[i]


def _split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    train, rest = [], []
    for item in items:
        key = item.split("=", 1)[0].strip()
        (train if key.startswith("train.") else rest).append(item.strip()[len("train."):] if key.startswith("train.") else item)
    return train, rest


def _load_tokenizer(path: str | None, pipe_cfg, device):
    """The frozen tokenizer: loaded from `path`, or built from the preset when it has no weights."""
    from .. import registry
    from ..errors import CheckpointError, ConfigError
    from ..saving import load
    from ..tokenizers.base import Tokenizer
    from .tokenizer import locate_tokenizer

    if path is None:
        tok = registry.build(pipe_cfg.tokenizer)
        if any(True for _ in tok.parameters()):
            raise ConfigError(f"the {type(pipe_cfg.tokenizer).kind} tokenizer has weights: train it first "
                              "(`argen tokenizer train --preset ... --out runs/tok`) and pass --tokenizer runs/tok")
        return tok.to(device).eval(), None
    tok_dir, _ = locate_tokenizer(Path(path))
    tok = load(tok_dir, map_location=device)
    if not isinstance(tok, Tokenizer):
        raise CheckpointError(f"{tok_dir} holds a {type(tok).__name__}, not a tokenizer")
    for p in tok.parameters():
        p.requires_grad_(False)
    return tok.eval(), str(tok_dir)


def build_configs(args: argparse.Namespace, device):
    """(pipeline config before syncing to tokenizer/data, TrainConfig) of an invocation, validated."""
    from ..config import apply_overrides
    from ..errors import ConfigError
    from ..generators.base import GeneratorConfig
    from ..pipeline import PipelineConfig
    from ..presets import get_config
    from ..train import TrainConfig

    train_over, rest = _split_overrides(args.overrides)
    cfg = get_config(args.preset)
    if isinstance(cfg, GeneratorConfig):
        cfg = PipelineConfig(tokenizer=PipelineConfig().tokenizer, generator=cfg)
    elif not isinstance(cfg, PipelineConfig):
        raise ConfigError(f"preset '{args.preset}' is a {type(cfg).__name__}; `argen train` takes a pipeline or "
                          "generator preset (e.g. fmnist-raster-tiny, llamagen-tiny); tokenizers train with "
                          "`argen tokenizer train`")
    top = {f.name for f in dataclasses.fields(PipelineConfig)}
    rest = [r if r.split("=", 1)[0].strip().split(".")[0] in top else f"generator.{r.strip()}" for r in rest]
    if rest:
        cfg = apply_overrides(cfg, rest)
    steps = args.steps or 1000
    train_cfg = TrainConfig(steps=steps, batch_size=args.batch_size or 64, lr=args.lr or 3e-4, betas=(0.9, 0.95),
                            weight_decay=0.05, warmup_steps=min(100, steps // 10), schedule="cosine",
                            min_lr_ratio=0.1, grad_clip=1.0, seed=args.seed or 0,
                            log_every=max(1, min(50, steps // 10)), ckpt_every=max(1, steps // 2),
                            keep_checkpoints=2, progress=args.progress,
                            precision="bf16" if device.type == "cuda" else "fp32")
    if train_over:
        train_cfg = apply_overrides(train_cfg, train_over)
    return cfg, train_cfg


def _sync(cfg, tokenizer, dataset):
    """Pipeline config whose tokenizer is the trained one and whose generator fits its tokens and the data."""
    from ..errors import ConfigError

    layout = tokenizer.layout
    num_classes = dataset_classes = len(dataset.classes)
    gen = cfg.generator
    changes = {}
    if layout.vocab_size is not None and gen.vocab_size != layout.vocab_size:
        changes["vocab_size"] = layout.vocab_size
    if tuple(map(tuple, gen.scales)) != tuple(map(tuple, layout.scales)):
        changes["scales"] = tuple(tuple(s) for s in layout.scales)
    if gen.num_classes != num_classes:
        changes["num_classes"] = num_classes
    tok_quantizer = getattr(tokenizer, "quantizer", None)
    if hasattr(gen, "quantizer") and tok_quantizer is not None and gen.quantizer != tok_quantizer.config:
        changes["quantizer"] = tok_quantizer.config  # next-scale builds its inputs with the tokenizer's quantizer
    try:
        gen = gen.replace(**changes) if changes else gen
        names = tuple(dataset.classes) if dataset_classes else ()
        return cfg.replace(tokenizer=tokenizer.config, generator=gen, class_names=names), changes
    except ValueError as e:
        raise ConfigError(f"cannot fit generator {type(gen).kind} to the tokenizer/data ({e})") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import registry
    from ..config import to_dict
    from ..data import TokenCacheDataset, build_token_cache, fingerprint, load_dataset
    from ..errors import ConfigError
    from ..generators.base import GeneratorTask
    from ..imageio import save_grid
    from ..pipeline import Pipeline
    from ..saving import atomic_write_text
    from ..train import Trainer, find_latest
    from ..train.checkpoint import checkpoint_dir

    apply_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out)
    if not args.resume and find_latest(checkpoint_dir(out)) is not None:
        raise ConfigError(f"{out} already holds a training run; add --resume to continue it or choose a new --out")
    run_file = out / RUN_FILE
    saved = json.loads(run_file.read_text()) if args.resume and run_file.is_file() else None
    cfg, train_cfg = build_configs(args, device)
    if saved is not None and "train" in saved:  # keep the run's schedule; only the allowed fields (steps, logging, ...) may change
        from ..config import apply_overrides
        from ..train import TrainConfig

        train_cfg = TrainConfig.from_dict(saved["train"]).replace(steps=train_cfg.steps if args.steps else
                                                                  saved["train"]["steps"], progress=args.progress)
        train_over = _split_overrides(args.overrides)[0]
        train_cfg = apply_overrides(train_cfg, train_over) if train_over else train_cfg
    tokenizer, tok_dir = _load_tokenizer(args.tokenizer, cfg, device)
    resolution = tokenizer.config.resolution
    dataset = load_dataset(args.data, split="train", resolution=resolution)
    if args.max_images:
        dataset = _FirstN(dataset, args.max_images)
    cfg, changes = _sync(cfg, tokenizer, dataset)
    record = {"preset": args.preset, "data": args.data, "max_images": args.max_images, "tokenizer": tok_dir,
              "overrides": args.overrides, "pipeline": to_dict(cfg), "train": to_dict(train_cfg)}
    if saved is not None:
        for key in ("data", "max_images", "pipeline"):
            if saved.get(key) != record[key]:
                raise ConfigError(f"--resume: {key} differs from the run in {out}; resume with the same preset, "
                                  "--data, --tokenizer, --max-images and --set values")

    cache_dir = Path(args.cache) if args.cache else out / "tokens"
    say(f"encoding {len(dataset)} {args.data} images at {resolution}px into the token cache {cache_dir} (once)")
    encode = lambda images: tokenizer.encode(images.to(device))  # noqa: E731
    build_token_cache(encode, dataset, cache_dir, batch_size=128, tokenizer_hash=fingerprint(tokenizer),
                      progress=args.progress)
    tokens = TokenCacheDataset(cache_dir, tokenizer_hash=fingerprint(tokenizer))

    torch.manual_seed(train_cfg.seed)  # weight init (the Trainer restores its own RNG state on resume)
    generator = registry.build(cfg.generator)
    if hasattr(generator, "bind_tokenizer"):  # paradigms that embed with the tokenizer's codebook (VAR)
        generator.bind_tokenizer(tokenizer)
    trainer = Trainer(train_cfg, GeneratorTask(generator), tokens, out, resume=args.resume, device=device)
    atomic_write_text(run_file, json.dumps(record, indent=2) + "\n")
    if changes:
        say("generator fitted to tokenizer/data: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    say(f"training {type(cfg.generator).kind} ({sum(p.numel() for p in generator.parameters()) / 1e6:.2f}M params) "
        f"on {len(tokens)} token sequences of {cfg.generator.num_tokens} tokens, steps {trainer.step} -> "
        f"{train_cfg.steps}, device {device}")
    records = trainer.fit()
    if records:
        last = records[-1]
        m = last["metrics"]
        say(f"step {last['step']}: loss {last['loss']:.4f} nats/token, {m.get('bits_per_token', float('nan')):.4f} "
            "bits/token")
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.ema_module)
    generator.eval()
    options = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("tokenizer", "generator")}
    pipe = Pipeline.from_parts(tokenizer, generator, **options)
    pipe_dir = pipe.save(out / PIPELINE_DIR)
    say(f"pipeline saved to {pipe_dir}")
    if args.samples_per_class > 0:
        n = cfg.generator.num_classes
        labels = [c for c in range(n) for _ in range(args.samples_per_class)] if n else [-1] * 8 * args.samples_per_class
        images = pipe(labels, seed=0)
        grid = save_grid(images.cpu(), out / "samples.png", nrow=args.samples_per_class if n else 8)
        say(f"samples (one row per class, seed 0, cfg {cfg.cfg}) in {grid}")
    say(f"checkpoints in {out / 'checkpoints'}, log in {out / 'log.jsonl'}")
    return 0
