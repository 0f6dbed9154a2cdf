"""`argen tokenizer train|eval`: train a tokenizer preset on a dataset; measure its reconstructions.

    argen tokenizer train --preset vq-tiny --data fashion-mnist --steps 300 --out runs/vq-tiny
    argen tokenizer train --preset vq-tiny --data fashion-mnist --steps 600 --out runs/vq-tiny --resume
    argen tokenizer eval runs/vq-tiny --data fashion-mnist --split test --n 1000 --features lenet-fmnist

`--set` routes dotted overrides by prefix: `train.*` -> TrainConfig (steps, batch_size, lr, ...),
`loss.*` / `task.*` -> the training objective (e.g. loss.disc_weight=0, loss.perceptual_path=DIR),
anything else -> the tokenizer config (e.g. quantizer.codebook_size=512, net.ch=64).
Fashion-MNIST's 28 px images are zero-padded to 32 px by default (the data module's "auto" fit), since
28 is not a multiple of the tiny presets' downsampling factor 4.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import HelpFormatter
from ._common import add_device_argument, add_set_argument, add_threads_argument, apply_threads, resolve_device, say

COMMAND = "tokenizer"
HELP = "train a tokenizer preset on a dataset, or evaluate a trained tokenizer (PSNR, SSIM, rFID, usage)"
RUN_FILE = "run.json"
TOKENIZER_DIR = "tokenizer"
_TASK_PREFIXES = ("loss.", "task.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train a tokenizer preset", formatter_class=HelpFormatter)
    t.add_argument("--preset", required=True, help="tokenizer preset, e.g. vq-tiny, fsq-tiny, vae-tiny (see `argen presets`)")
    t.add_argument("--data", default="fashion-mnist", help="dataset name (fashion-mnist, emoji) or image folder")
    t.add_argument("--resolution", type=int, default=None,
                   help="training image size (default: the preset's resolution); must be a multiple of its downsampling")
    t.add_argument("--steps", type=int, default=None, help="optimizer steps (default 300)")
    t.add_argument("--batch-size", type=int, default=None, help="micro-batch size (default 32)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-4)")
    t.add_argument("--seed", type=int, default=None, help="seed of the run (default 0)")
    t.add_argument("--out", required=True, help="run directory: checkpoints/, tokenizer/, reconstructions.png, log.jsonl")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    t.add_argument("--progress", action="store_true", help="show a progress bar")
    add_set_argument(t)
    add_device_argument(t)
    add_threads_argument(t)

    e = sub.add_parser("eval", help="PSNR, SSIM, rFID, codebook usage of a trained tokenizer",
                       formatter_class=HelpFormatter)
    e.add_argument("path", help="a run directory from `tokenizer train` or a saved tokenizer directory")
    e.add_argument("--data", default="fashion-mnist", help="dataset name or image folder")
    e.add_argument("--split", default="test", help="train, test or all")
    e.add_argument("--resolution", type=int, default=None, help="image size (default: the run's training size)")
    e.add_argument("--n", type=int, default=1000, help="number of images (the first N of the split)")
    e.add_argument("--features", default="inception",
                   help="feature net for rFID: inception (TF-Inception, ~1 s/image on CPU) or lenet-fmnist (fast, labelled FD)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--out", default=None, help="JSON path (default: PATH/eval-<data>-<split>.json)")
    add_device_argument(e)
    add_threads_argument(e)


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    return _train(args) if args.action == "train" else _eval(args)


# ----------------------------------------------------------------------------- train

def split_overrides(overrides: list[str]) -> tuple[list[str], list[str], list[str]]:
    """--set items -> (tokenizer, train, task) override lists (prefix `train.` stripped)."""
    tok, train, task = [], [], []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.startswith("train."):
            train.append(item.strip()[len("train."):])
        elif key.startswith(_TASK_PREFIXES):
            task.append(item.strip()[len("task."):] if key.startswith("task.") else item.strip())
        else:
            tok.append(item)
    return tok, train, task


def build_run(args: argparse.Namespace, device, disc_start: int | None = None):
    """Tokenizer config, TrainConfig and task config of a `train` invocation (validated).

    `disc_start` (a resumed run's value) replaces the default of half the run's steps."""
    from ..config import apply_overrides
    from ..errors import ConfigError
    from ..presets import get_config
    from ..tokenizers.base import TokenizerConfig
    from ..tokenizers.task import TokenizerTaskConfig
    from ..train import TrainConfig

    tok_over, train_over, task_over = split_overrides(args.overrides)
    tok_cfg = get_config(args.preset, tok_over or None)
    if not isinstance(tok_cfg, TokenizerConfig):
        raise ConfigError(f"preset '{args.preset}' is not a tokenizer preset; pick one of the tokenizer presets "
                          "(vq-tiny, fsq-tiny, vae-tiny, ...) from `argen presets`")
    steps = args.steps or 300
    train_cfg = TrainConfig(steps=steps, batch_size=args.batch_size or 32, lr=args.lr or 2e-4, betas=(0.5, 0.9),
                            weight_decay=0.0, grad_clip=1.0, seed=args.seed or 0, log_every=max(1, min(50, steps // 10)),
                            ckpt_every=max(1, steps // 2), keep_checkpoints=2, progress=args.progress,
                            precision="bf16" if device.type == "cuda" else "fp32")
    if train_over:
        train_cfg = apply_overrides(train_cfg, train_over)
    # Short runs: the discriminator joins halfway (taming starts it late too) unless set explicitly.
    task_cfg = TokenizerTaskConfig()
    start = train_cfg.steps // 2 if disc_start is None else disc_start
    task_cfg = apply_overrides(task_cfg, [f"loss.disc_start={start}"] + task_over)
    return tok_cfg, train_cfg, task_cfg


def _train(args: argparse.Namespace) -> int:
    import torch

    from .. import registry
    from ..config import to_dict
    from ..data import load_dataset
    from ..errors import ConfigError
    from ..saving import atomic_write_text, save
    from ..tokenizers.task import TokenizerTask
    from ..train import Trainer, find_latest
    from ..train.checkpoint import checkpoint_dir

    device = resolve_device(args.device)
    out = Path(args.out)
    run_file = out / RUN_FILE
    saved = json.loads(run_file.read_text()) if args.resume and run_file.is_file() else None
    if not args.resume and find_latest(checkpoint_dir(out)) is not None:
        raise ConfigError(f"{out} already holds a training run; add --resume to continue it or choose a new --out")
    disc_start = saved["task"]["loss"]["disc_start"] if saved else None
    tok_cfg, train_cfg, task_cfg = build_run(args, device, disc_start)
    resolution = args.resolution or tok_cfg.resolution
    f = tok_cfg.downsample
    if resolution % f:
        raise ConfigError(f"--resolution {resolution} is not a multiple of {args.preset}'s downsampling factor {f}; "
                          f"use e.g. {max(f, round(resolution / f) * f)}")
    record = {"preset": args.preset, "data": args.data, "resolution": resolution, "overrides": args.overrides,
              "tokenizer": {"kind": type(tok_cfg).kind, **to_dict(tok_cfg)},
              "task": to_dict(task_cfg)}
    if saved is not None:
        for key in ("data", "resolution", "tokenizer", "task"):
            if saved.get(key) != record[key]:
                raise ConfigError(f"--resume: {key} differs from the run in {out} (was {saved.get(key)!r}); "
                                  "resume with the same preset, --data, --resolution and --set values")
    dataset = load_dataset(args.data, split="train", resolution=resolution)
    torch.manual_seed(train_cfg.seed)  # weight init (the Trainer restores its own RNG state on resume)
    tokenizer = registry.build(tok_cfg)
    task = TokenizerTask(tokenizer, task_cfg).to(device)
    say(task.loss.perceptual_status)
    trainer = Trainer(train_cfg, task, dataset, out, resume=args.resume, device=device)
    atomic_write_text(run_file, json.dumps(record, indent=2) + "\n")
    start = trainer.step
    say(f"training {args.preset} ({sum(p.numel() for p in tokenizer.parameters()) / 1e6:.2f}M params) on "
        f"{args.data} at {resolution}px, steps {start} -> {train_cfg.steps}, device {device}")
    records = trainer.fit()
    if records:
        last = records[-1]
        m = last["metrics"]
        extra = " ".join(f"{k} {m[k]:.4g}" for k in ("pixel", "usage", "perplexity", "kl") if m.get(k) is not None)
        say(f"step {last['step']}: loss {last['loss']:.4g} {extra}")
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.ema_module)
    tokenizer.eval()
    save(tokenizer, out / TOKENIZER_DIR, extra={"train_resolution": resolution, "data": args.data})
    grid_path = write_reconstructions(tokenizer, args.data, resolution, out / "reconstructions.png", device)
    say(f"tokenizer saved to {out / TOKENIZER_DIR}")
    say(f"reconstructions (top: originals, bottom: reconstructions) in {grid_path}")
    say(f"checkpoints in {out / 'checkpoints'}, log in {out / 'log.jsonl'}")
    return 0


def write_reconstructions(tokenizer, data: str, resolution: int, path: Path, device, n: int = 16) -> Path:
    import torch

    from ..data import load_dataset
    from ..imageio import save_grid

    ds = load_dataset(data, split="test", resolution=resolution)
    images = torch.stack([ds[i][0] for i in range(min(n, len(ds)))]).to(device)
    with torch.no_grad():
        recon = tokenizer.decode(tokenizer.encode(images), grid=tokenizer.layout_for(resolution, resolution).grid)
    return save_grid(torch.cat([images, recon.float()]).cpu(), path, nrow=8)


# ----------------------------------------------------------------------------- eval

def locate_tokenizer(path: Path) -> tuple[Path, dict]:
    """A saved tokenizer directory and the run record (empty if `path` is not a run directory)."""
    from ..errors import CheckpointError

    if (path / TOKENIZER_DIR / "config.json").is_file():
        run = json.loads((path / RUN_FILE).read_text()) if (path / RUN_FILE).is_file() else {}
        return path / TOKENIZER_DIR, run
    if (path / "config.json").is_file():
        return path, {}
    raise CheckpointError(f"{path} holds no trained tokenizer (no {TOKENIZER_DIR}/config.json or config.json); "
                          "pass the --out directory of `argen tokenizer train`")


def _eval(args: argparse.Namespace) -> int:
    from ..saving import load
    from ..tokenizers.base import Tokenizer
    from ..errors import CheckpointError
    from ..tokenizers.evaluation import evaluate_tokenizer

    device = resolve_device(args.device)
    path = Path(args.path)
    tok_dir, run = locate_tokenizer(path)
    tokenizer = load(tok_dir, map_location=device)
    if not isinstance(tokenizer, Tokenizer):
        raise CheckpointError(f"{tok_dir} holds a {type(tokenizer).__name__}, not a tokenizer")
    resolution = args.resolution or run.get("resolution") or tokenizer.config.resolution
    out = Path(args.out) if args.out else path / f"eval-{Path(args.data).name}-{args.split}.json"
    say(f"evaluating {tok_dir} on {args.data}:{args.split} at {resolution}px, N={args.n}, features {args.features}")
    result = evaluate_tokenizer(tokenizer, args.data, split=args.split, resolution=resolution, n=args.n,
                                features=args.features, batch_size=args.batch_size, device=device, out=out)
    say(result["summary"])
    say(f"results written to {out}")
    return 0
