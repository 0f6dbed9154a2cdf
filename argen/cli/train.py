"""`argen train`: train a generator on tokens of a frozen, already trained tokenizer; save a pipeline.

    argen tokenizer train --preset vq-tiny --data fashion-mnist --steps 300 --out runs/vq
    argen train --preset fmnist-raster-tiny --data fashion-mnist --tokenizer runs/vq --steps 2000 --out runs/ar
    argen train ... --out runs/ar --steps 4000 --resume          # continue (exact resume via the Trainer)
    argen sample runs/ar --per-class 8 --seed 0 --cfg 2 --out samples/
    torchrun --nproc_per_node 4 -m argen train ... --strategy fsdp --out runs/ar   # 4 GPUs (or CPU ranks)

An argv layer over `argen.train_generator` (argen/train/recipes.py), which documents the defaults, the fitting
of the generator to the tokenizer and data, and the --set routing rule.
"""
from __future__ import annotations

import argparse

from ._common import (add_data_arguments, add_device_argument, add_progress_argument, add_set_argument,
                      add_strategy_arguments, add_threads_argument, apply_threads, nonnegative_int, positive_float,
                      positive_int, seed_int, training_run)

COMMAND = "train"
HELP = "train a generator (raster, random-order, next-scale, ...) on a dataset's tokens; saves a pipeline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", required=True, help="pipeline or generator preset, e.g. fmnist-raster-tiny (`argen presets`)")
    p.add_argument("--data", default="fashion-mnist", help="dataset name (fashion-mnist, emoji) or image folder")
    p.add_argument("--tokenizer", default=None,
                   help="trained tokenizer: the --out directory of `argen tokenizer train` or a saved tokenizer "
                        "(optional only for tokenizers without weights, e.g. the pixel tokenizer)")
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="micro-batch size (default 64)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default 3e-4, warm-up + cosine)")
    p.add_argument("--seed", type=seed_int, default=None, help="seed of the run (default 0)")
    p.add_argument("--max-images", type=positive_int, default=None, help="use only the first N training images")
    p.add_argument("--cache", default=None, help="token cache directory (default OUT/tokens)")
    p.add_argument("--out", required=True, help="run directory: pipeline/, samples.png, log.jsonl, checkpoints/")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--samples-per-class", type=nonnegative_int, default=4,
                   help="images per class in OUT/samples.png (0 = none)")
    add_progress_argument(p)
    add_data_arguments(p)
    add_set_argument(p, "generator")
    add_device_argument(p)
    add_strategy_arguments(p)
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..train.recipes import train_generator

    apply_threads(args.threads)
    with training_run(args) as common:
        train_generator(args.preset, out=args.out, tokenizer=args.tokenizer, data=args.data, steps=args.steps,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, max_images=args.max_images,
                        cache=args.cache, resume=args.resume, samples_per_class=args.samples_per_class,
                        overrides=args.overrides, **common)
    return 0
