"""`argen tokenizer train|eval`: train a tokenizer preset on a dataset; measure its reconstructions.

    argen tokenizer train --preset vq-tiny --data fashion-mnist --steps 300 --out runs/vq-tiny
    argen tokenizer train --preset vq-tiny --data fashion-mnist --steps 600 --out runs/vq-tiny --resume
    argen tokenizer eval runs/vq-tiny --data fashion-mnist --split test --n 1000 --features lenet-fmnist
    torchrun --nproc_per_node 2 -m argen tokenizer train --preset vq-tiny --strategy ddp --out runs/vq   # GAN phases too

`train` is an argv layer over `argen.train_tokenizer` (argen/train/recipes.py: defaults, --set routing:
`train.*` -> TrainConfig, `loss.*` / `task.*` -> the objective, other keys -> the tokenizer config, e.g.
quantizer.codebook_size=512, net.ch=64). `--resolution` is stored in the tokenizer's config. Fashion-MNIST's
28 px images are zero-padded to 32 px by default (the data module's "auto" fit), since 28 is not a multiple of
the tiny presets' downsampling factor 4.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import HelpFormatter
from ._common import (add_data_arguments, add_device_argument, add_progress_argument, add_set_argument,
                      add_strategy_arguments, add_threads_argument, apply_threads, positive_float, positive_int,
                      resolve_device, say, seed_int, training_run, warnings_as_lines)

COMMAND = "tokenizer"
HELP = "train a tokenizer preset on a dataset, or evaluate a trained tokenizer (PSNR, SSIM, rFID, usage)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train a tokenizer preset", formatter_class=HelpFormatter)
    t.add_argument("--preset", required=True, help="tokenizer preset, e.g. vq-tiny, fsq-tiny, vae-tiny (see `argen presets`)")
    t.add_argument("--data", default="fashion-mnist", help="dataset name (fashion-mnist, emoji) or image folder")
    t.add_argument("--resolution", type=positive_int, default=None,
                   help="training image size, stored in the tokenizer's config (default: the preset's); a multiple "
                        "of its downsampling")
    t.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default 300)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="micro-batch size (default 32)")
    t.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 2e-4)")
    t.add_argument("--seed", type=seed_int, default=None, help="seed of the run (default 0)")
    t.add_argument("--out", required=True, help="run directory: checkpoints/, tokenizer/, reconstructions.png, log.jsonl")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    add_progress_argument(t)
    add_data_arguments(t)
    add_set_argument(t, "tokenizer")
    add_device_argument(t)
    add_strategy_arguments(t)
    add_threads_argument(t)

    e = sub.add_parser("eval", help="PSNR, SSIM, rFID, codebook usage of a trained tokenizer",
                       formatter_class=HelpFormatter)
    e.add_argument("path", help="a run directory from `tokenizer train` or a saved tokenizer directory")
    e.add_argument("--data", default="fashion-mnist", help="dataset name or image folder")
    e.add_argument("--split", default="test", help="train, test or all")
    e.add_argument("--resolution", type=positive_int, default=None, help="image size (default: the tokenizer's)")
    e.add_argument("--n", type=positive_int, default=1000, help="number of images (the first N of the split)")
    e.add_argument("--features", default="inception",
                   help="feature net for rFID: inception (TF-Inception, ~1 s/image on CPU) or lenet-fmnist (fast, labelled FD)")
    e.add_argument("--batch-size", type=positive_int, default=64)
    e.add_argument("--out", default=None, help="JSON path (default: PATH/eval-<data>-<split>.json)")
    add_device_argument(e)
    add_threads_argument(e)


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    return _train(args) if args.action == "train" else _eval(args)


def _train(args: argparse.Namespace) -> int:
    from ..train.recipes import train_tokenizer

    with training_run(args) as common:
        train_tokenizer(args.preset, out=args.out, data=args.data, resolution=args.resolution, steps=args.steps,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, resume=args.resume,
                        overrides=args.overrides, **common)
    return 0


# ----------------------------------------------------------------------------- eval

def _eval(args: argparse.Namespace) -> int:
    from ..tokenizers.evaluation import evaluate_tokenizer
    from ..train.recipes import find_tokenizer, load_tokenizer

    device = resolve_device(args.device)
    path = Path(args.path)
    tok_dir, _ = find_tokenizer(path)
    tokenizer = load_tokenizer(path, device)
    resolution = args.resolution or tokenizer.config.resolution
    out = Path(args.out) if args.out else path / f"eval-{Path(args.data).name}-{args.split}.json"
    say(f"evaluating {tok_dir} on {args.data}:{args.split} at {resolution}px, N={args.n}, features {args.features}")
    with warnings_as_lines():
        result = evaluate_tokenizer(tokenizer, args.data, split=args.split, resolution=resolution, n=args.n,
                                    features=args.features, batch_size=args.batch_size, device=device, out=out)
    note = result.get("protocol", {}).get("reference", {}).get("split_note")
    if note:
        say(note)
    say(result["summary"])
    say(f"results written to {out}")
    return 0
