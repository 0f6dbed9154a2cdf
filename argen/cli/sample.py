"""`argen sample`: generate images with a saved pipeline; writes one PNG per image, `conditions.json` (file ->
class) or, for text pipelines, `prompts.json` (file -> prompt, read by `argen eval --alignment`), and optionally
a grid.

    argen sample runs/ar --labels 0,1,sneaker --seed 0 --cfg 2 --out samples/
    argen sample runs/ar/pipeline --per-class 8 --top-k 50 --temperature 0.9 --out samples/ --grid grid.png
    argen sample runs/t2i --prompt "red heart" --prompt "smiling cat" --per-prompt 4 --out samples/
    torchrun --nproc_per_node 8 -m argen sample runs/ar --num-images 50000 --seed 0 --out samples/   # 8 GPUs

Images are generated in chunks of --batch-size (default 64); chunk k is seeded with seed + k, so every image
depends only on the seed, the batch size and its index — never on the number of processes. Under torchrun the
chunks are dealt to the ranks round-robin, each rank writes its own PNGs, and the result is the same set of
files one process writes with the same --seed and --batch-size.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._common import (add_device_argument, add_sampling_arguments, add_threads_argument, apply_threads, finish,
                      positive_int, rank_device, sampling_overrides, say, world)

DEFAULT_CHUNK = 64

COMMAND = "sample"
HELP = "generate images from a saved pipeline (class ids or names, CFG, top-k/top-p, seeds)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a saved pipeline directory, or the --out directory of `argen train`")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--labels", default=None,
                     help="comma-separated class ids or names, -1/none = unconditional, e.g. 0,1,sneaker")
    who.add_argument("--per-class", type=positive_int, default=None, help="N images for every class (default 4)")
    who.add_argument("--num", "--num-images", dest="num", type=positive_int, default=None,
                     help="N unconditional images (under torchrun write --num-images: torchrun reads --num as its "
                          "own --numa-binding)")
    who.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                     help="a caption for a text-conditional pipeline (repeatable; \"\" = unconditional)")
    p.add_argument("--per-prompt", type=positive_int, default=1, help="images per --prompt")
    add_sampling_arguments(p, seed_help="random seed (same seed -> same images on the same device)",
                           cfg_help="guidance scale, 1 = off (default: the pipeline's)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_CHUNK,
                   help="images generated per forward batch; chunk k of them is seeded with seed + k")
    p.add_argument("--out", default="samples", help="output directory for the PNGs")
    p.add_argument("--grid", default=None, help="also write all images as one grid PNG at this path")
    p.add_argument("--progress", action="store_true", help="show a progress bar over decoding steps")
    add_device_argument(p)
    add_threads_argument(p)


def _label_names(conditioner, labels: list[int]) -> list[str]:
    names = getattr(conditioner.config, "class_names", ())
    return ["uncond" if lab < 0 else (names[lab] if names else str(lab)) for lab in labels]


def _slug(text: str, limit: int = 40) -> str:
    """A file-name-safe tag of a class name or prompt."""
    keep = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text.strip().replace("/", "-"))
    return "_".join(p for p in keep.split("_") if p)[:limit] or "uncond"


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    rank, _, size = world()
    strategy = None
    if size > 1:  # torchrun: one process group to deal out the chunks
        from ..train.distributed import DDP

        strategy = DDP(timeout_minutes=60.0)
    device = rank_device(args.device, "single" if strategy is None else "ddp")
    if strategy is not None:
        strategy.setup(device)
    try:
        return _run(args, device, strategy, say if rank == 0 else (lambda _: None))
    finally:
        finish(strategy)


def _run(args: argparse.Namespace, device, strategy, say) -> int:
    import json

    from ..imageio import save_grid, save_image
    from ..pipeline import Pipeline
    from ..saving import atomic_write_text
    from ..train.recipes import find_pipeline

    rank, size = (0, 1) if strategy is None else (strategy.rank, strategy.world_size)
    kwargs = sampling_overrides(args)
    pipe = Pipeline.load(find_pipeline(Path(args.path)), map_location=device)
    conditioner = pipe.conditioner
    kind = conditioner.describe()["kind"]
    n_cls = getattr(conditioner, "num_classes", 0)
    names: list[str]  # what each image was conditioned on, for file names and the sidecar json
    if args.prompt is not None:
        if kind != "text":
            raise ValueError(f"this pipeline is conditioned on {kind} labels, not text: use --labels or --per-class")
        prompts = [p for p in args.prompt for _ in range(args.per_prompt)]
        cond, names = conditioner.parse(prompts), prompts
    elif kind == "text" and args.num is None:
        raise ValueError("this pipeline is text-conditional: give --prompt TEXT (repeatable), or --num N for "
                         "unconditional images")
    elif args.labels is not None:
        cond = conditioner.parse([s for s in args.labels.split(",") if s.strip()])
        names = _label_names(conditioner, cond.labels.tolist())
    elif args.num is not None:
        cond, names = conditioner.null(args.num), ["uncond"] * args.num
    else:
        per = args.per_class or 4
        labels = [c for c in range(n_cls) for _ in range(per)] if n_cls else [-1] * per
        cond = conditioner.parse(labels) if n_cls else conditioner.null(per)
        names = _label_names(conditioner, labels)
    from ..sampling.loop import resolve_options

    resolve_options(pipe.generator, pipe.config.sampling, **kwargs)  # refuse bad options before sampling
    callback = None
    if args.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(desc="decoding", unit="step")
        def callback(step: int, total: int) -> None:  # noqa: E306
            bar.total = total
            bar.n = step
            bar.refresh()
    n = cond.batch_size
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory for the PNGs")
    chunks = chunk_seeds(n, args.batch_size, args.seed)
    say(f"sampling {n} images with seed {args.seed} in {len(chunks)} chunk(s) of up to {args.batch_size}"
        + (f" on {size} processes" if size > 1 else "") + " "
        + " ".join(f"{k}={v}" for k, v in {**pipe.sample_defaults(), **kwargs}.items()))
    files = [f"{i:04d}_{_slug(name)}.png" for i, name in enumerate(names)]
    mine: dict[int, object] = {}
    start = time.perf_counter()
    for start_row, end_row, seed in chunks[rank::size]:  # chunk k -> rank k % size
        images = pipe(cond.rows(start_row, end_row), seed=seed, callback=callback, pack_weights=args.pack_weights,
                      **kwargs).cpu()
        for i, img in zip(range(start_row, end_row), images):
            save_image(img, out / files[i])
            if args.grid:
                mine[i] = img
    elapsed = time.perf_counter() - start
    if strategy is not None:
        elapsed = max(strategy.gather(elapsed))
        gathered = strategy.gather(mine) if args.grid else []
        for part in gathered:
            mine.update(part)
    if rank != 0:
        return 0
    # prompts.json is what `argen eval --alignment --samples DIR` reads; conditions.json names the class
    sidecar = "prompts.json" if kind == "text" else "conditions.json"
    atomic_write_text(out / sidecar, json.dumps(dict(zip(files, names)), indent=2) + "\n")
    say(f"{n} images written to {out}/ ({sidecar}: file -> {'prompt' if kind == 'text' else 'class'}) in "
        f"{elapsed:.1f} s ({n / elapsed if elapsed > 0 else float('inf'):.2f} images/s)")
    if args.grid:
        import torch

        nrow = args.per_class or (8 if n > 8 else n)
        grid = torch.stack([mine[i] for i in range(n)])
        say(f"grid written to {save_grid(grid, args.grid, nrow=nrow)}")
    return 0


def chunk_seeds(n: int, chunk: int, seed: int) -> list[tuple[int, int, int]]:
    """(first row, end row, seed) of every chunk: chunk k holds rows [k * chunk, (k + 1) * chunk) and is sampled
    with seed + k (mod 2**63), whichever process samples it."""
    return [(s, min(s + chunk, n), (seed + k) % 2**63) for k, s in enumerate(range(0, n, chunk))]
