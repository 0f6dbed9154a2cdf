"""`argen sample`: generate images with a saved pipeline; writes one PNG per image plus a grid.

    argen sample runs/ar --labels 0,1,sneaker --seed 0 --cfg 2 --out samples/
    argen sample runs/ar/pipeline --per-class 8 --top-k 50 --temperature 0.9 --out samples/ --grid grid.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (add_device_argument, add_sampling_arguments, add_threads_argument, apply_threads, positive_int,
                      resolve_device, sampling_overrides, say)

COMMAND = "sample"
HELP = "generate images from a saved pipeline (class ids or names, CFG, top-k/top-p, seeds)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a saved pipeline directory, or the --out directory of `argen train`")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--labels", default=None,
                     help="comma-separated class ids or names, -1/none = unconditional, e.g. 0,1,sneaker")
    who.add_argument("--per-class", type=positive_int, default=None, help="N images for every class (default 4)")
    who.add_argument("--num", type=positive_int, default=None, help="N unconditional images")
    add_sampling_arguments(p, seed_help="random seed (same seed -> same images on the same device)",
                           cfg_help="guidance scale, 1 = off (default: the pipeline's)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images generated per forward batch (default: all)")
    p.add_argument("--out", default="samples", help="output directory for the PNGs")
    p.add_argument("--grid", default=None, help="also write all images as one grid PNG at this path")
    p.add_argument("--progress", action="store_true", help="show a progress bar over decoding steps")
    add_device_argument(p)
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..imageio import save_grid, save_image
    from ..pipeline import Pipeline
    from ..train.recipes import find_pipeline

    apply_threads(args.threads)
    device = resolve_device(args.device)
    kwargs = sampling_overrides(args)
    pipe = Pipeline.load(find_pipeline(Path(args.path)), map_location=device)
    conditioner = pipe.conditioner
    n_cls = getattr(conditioner, "num_classes", 0)
    if args.labels is not None:
        cond = conditioner.parse([s for s in args.labels.split(",") if s.strip()])
    elif args.num is not None:
        cond = conditioner.null(args.num)
    else:
        per = args.per_class or 4
        cond = conditioner.parse([c for c in range(n_cls) for _ in range(per)]) if n_cls else conditioner.null(per)
    from ..sampling.loop import resolve_options

    resolve_options(pipe.generator, pipe.config.sampling, **kwargs)  # refuse bad options before sampling
    callback = None
    if args.progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="decoding", unit="step")
        def callback(step: int, total: int) -> None:  # noqa: E306
            bar.total = total
            bar.n = step
            bar.refresh()
    n = cond.batch_size
    say(f"sampling {n} images with seed {args.seed} "
        + " ".join(f"{k}={v}" for k, v in {**pipe.sample_defaults(), **kwargs}.items()))
    images = pipe(cond, seed=args.seed, batch_size=args.batch_size, callback=callback,
                  pack_weights=args.pack_weights, **kwargs).cpu()
    out = Path(args.out)
    names = getattr(conditioner.config, "class_names", ())
    labels = cond.labels.tolist() if cond.labels is not None else [-1] * n
    for i, (img, lab) in enumerate(zip(images, labels)):
        tag = "uncond" if lab < 0 else (names[lab] if names else str(lab)).replace("/", "-").replace(" ", "_")
        save_image(img, out / f"{i:04d}_{tag}.png")
    say(f"{n} images written to {out}/")
    if args.grid:
        nrow = args.per_class or (8 if n > 8 else n)
        say(f"grid written to {save_grid(images, args.grid, nrow=nrow)}")
    return 0
