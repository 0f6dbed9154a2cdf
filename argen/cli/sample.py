"""`argen sample`: generate images with a saved pipeline; writes one PNG per image plus a grid.

    argen sample runs/ar --labels 0,1,sneaker --seed 0 --cfg 2 --out samples/
    argen sample runs/ar/pipeline --per-class 8 --top-k 50 --temperature 0.9 --out samples/ --grid grid.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (add_device_argument, add_sampling_arguments, add_threads_argument, apply_threads, resolve_device,
                      sampling_overrides, say)

COMMAND = "sample"
HELP = "generate images from a saved pipeline (class ids or names, CFG, top-k/top-p, seeds)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a saved pipeline directory, or the --out directory of `argen train`")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--labels", default=None,
                     help="comma-separated class ids or names, -1/none = unconditional, e.g. 0,1,sneaker")
    who.add_argument("--per-class", type=int, default=None, help="N images for every class (default 4)")
    who.add_argument("--num", type=int, default=None, help="N unconditional images")
    add_sampling_arguments(p, seed_help="random seed (same seed -> same images on the same device)",
                           cfg_help="guidance scale, 1 = off (default: the pipeline's)")
    p.add_argument("--batch-size", type=int, default=None, help="images generated per forward batch (default: all)")
    p.add_argument("--out", default="samples", help="output directory for the PNGs")
    p.add_argument("--grid", default=None, help="also write all images as one grid PNG at this path")
    p.add_argument("--progress", action="store_true", help="show a progress bar over decoding steps")
    add_device_argument(p)
    add_threads_argument(p)


def locate_pipeline(path: Path) -> Path:
    from ..errors import CheckpointError
    from .train import PIPELINE_DIR

    if (path / PIPELINE_DIR / "config.json").is_file():
        return path / PIPELINE_DIR
    if (path / "config.json").is_file():
        return path
    raise CheckpointError(f"{path} holds no saved pipeline (no config.json or {PIPELINE_DIR}/config.json); "
                          "pass a directory written by `argen train` or Pipeline.save")


def run(args: argparse.Namespace) -> int:
    from ..imageio import save_grid, save_image
    from ..pipeline import Pipeline

    apply_threads(args.threads)
    device = resolve_device(args.device)
    pipe = Pipeline.load(locate_pipeline(Path(args.path)), map_location=device)
    n_cls = pipe.generator.config.num_classes
    if args.labels is not None:
        labels = pipe.labels_for([s for s in args.labels.split(",") if s.strip()])
    elif args.num is not None:
        labels = [-1] * args.num
    else:
        per = args.per_class or 4
        labels = [c for c in range(n_cls) for _ in range(per)] if n_cls else [-1] * per
    if not labels:
        raise ValueError("nothing to sample: give --labels, --per-class N or --num N")
    kwargs = sampling_overrides(args)
    callback = None
    if args.progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="decoding", unit="step")
        def callback(step: int, total: int) -> None:  # noqa: E306
            bar.total = total
            bar.n = step
            bar.refresh()
    say(f"sampling {len(labels)} images with seed {args.seed} "
        + " ".join(f"{k}={v}" for k, v in {**pipe.config.sample_defaults, **kwargs}.items()))
    images = pipe(labels, seed=args.seed, batch_size=args.batch_size, callback=callback, **kwargs).cpu()
    out = Path(args.out)
    names = pipe.config.class_names
    for i, (img, lab) in enumerate(zip(images, labels)):
        tag = "uncond" if lab < 0 else (names[lab] if names else str(lab)).replace("/", "-").replace(" ", "_")
        save_image(img, out / f"{i:04d}_{tag}.png")
    say(f"{len(labels)} images written to {out}/")
    if args.grid:
        nrow = args.per_class or (8 if len(labels) > 8 else len(labels))
        say(f"grid written to {save_grid(images, args.grid, nrow=nrow)}")
    return 0
