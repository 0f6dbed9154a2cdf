"""`argen data`: inspect a dataset (count, classes, resolution, skipped files) and write a grid of examples."""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from ._common import positive_int

COMMAND = "data"
HELP = "inspect a dataset (fashion-mnist, emoji or an image folder) and save a grid of examples"
DESCRIPTION = ("Print a dataset's size, classes with per-class counts, resolution, unreadable files and folders and "
               "how the split was made, and write a PNG grid of examples (one row per class when the dataset has "
               "classes). With --quarantine DIR, the files the scan rejected are moved into DIR.")
MIN_TILE = 64  # small images are enlarged (nearest neighbour) in the grid so they and their labels are legible


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="NAME_OR_PATH", help="fashion-mnist, emoji, or a folder of images")
    p.add_argument("--split", default="train", choices=["train", "test", "all"])
    p.add_argument("--resolution", type=int, default=None, help="resize/crop to this size; None keeps the native size")
    p.add_argument("--grid", default=None, metavar="OUT.png",
                   help="where to write the example grid; None writes runs/data/<name>-<split>.png")
    p.add_argument("--n", type=int, default=64, help="number of example images in the grid (0: no grid)")
    p.add_argument("--on-error", default="skip", choices=["skip", "raise"],
                   help="unreadable image files: leave them out (skip) or fail (raise)")
    p.add_argument("--check", default="verify", choices=["verify", "decode"],
                   help="folder scan: header check (fast) or a full decode of every file (catches truncated JPEGs)")
    p.add_argument("--max-pixels", type=positive_int, default=None,
                   help="folder scan: refuse images whose header claims more pixels than this, before decoding "
                        "(decompression bombs); default 8192*8192 = 67108864")
    p.add_argument("--quarantine", default=None, metavar="DIR",
                   help="move the files the scan rejected into DIR (outside the dataset folder, or a hidden one), "
                        "keeping their relative paths; DIR/quarantine.jsonl records why")
    p.add_argument("--root", default=None, help="folder holding the files of a named dataset; None uses the installed copy")
    p.add_argument("--no-download", action="store_true", help="never download a named dataset that is not installed")
    p.add_argument("--write-shards", default=None, metavar="DIR",
                   help="also write the split as tar shards in DIR (PNG + label [+ caption] per sample); a token "
                        "cache directory (OUT/tokens of `argen train`) as NAME_OR_PATH is written as token shards. "
                        "Train from them with --data DIR / --cache DIR")
    p.add_argument("--shard-size", type=positive_int, default=5000, help="samples per tar shard")


def pick_examples(ds, n: int) -> tuple[list[int], int, bool]:
    """Grid indices, row length, and whether rows are classes (`n // classes` each) or evenly spaced picks."""
    import numpy as np

    if n <= 0 or len(ds) == 0:
        return [], 1, False
    if ds.conditional and ds.num_classes <= n:
        per = n // ds.num_classes
        picks = [int(i) for c in range(ds.num_classes) for i in np.flatnonzero(ds.labels == c)[:per]]
        if per > 1 and all((ds.labels == c).sum() >= per for c in range(ds.num_classes)):
            return picks, per, True
        return picks, 8, False
    return [int(i) for i in np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))], 8, False


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import dataset_key, load_dataset, quarantine
    from ..data.folder import MAX_LISTED
    from ..data.quarantine import RECORD
    from ..imageio import DEFAULT_MAX_PIXELS, save_grid
    from ._common import say

    if args.write_shards and (Path(args.dataset) / "meta.json").is_file():  # a token cache
        from ..data.shards import write_token_shards

        out = write_token_shards(args.dataset, args.write_shards, samples_per_shard=args.shard_size, progress=True)
        say(f"token shards: {out} (read them with --cache {out})")
        return 0
    named = dataset_key(args.dataset) is not None
    if named:
        options = {"root": args.root, "download": not args.no_download}
        if args.quarantine:
            raise ValueError("--quarantine is for image folders; the named datasets are installed read-only")
    else:
        if args.root:
            raise ValueError("--root is only for named datasets; for a folder pass its path as NAME_OR_PATH")
        options = {}
    ds = load_dataset(args.dataset, split=args.split, resolution=args.resolution, check=args.check,
                      on_error=args.on_error, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, **options)

    say(f"dataset: {ds.name} (split {ds.split})")
    if ds.split_note:
        say(f"split: {ds.split_note}")
    say(f"images: {len(ds)}")
    say(f"resolution: {ds.resolution}x{ds.resolution}")
    if ds.conditional:
        counts = ds.class_counts()
        width = max(len(c) for c in ds.classes)
        say(f"classes: {ds.num_classes}")
        for i, (c, k) in enumerate(counts.items()):
            say(f"  {i:>3}  {c:<{width}}  {k}")
    else:
        say("classes: none (unconditional, label -1)")
    say(f"captions: {'yes, e.g. ' + repr(ds.captions[0]) if ds.captions else 'none'}")
    for line in ds.warnings:
        say(f"warning: {line}")
    say(f"skipped files: {len(ds.skipped)}")
    for path, why in ds.skipped[:MAX_LISTED]:
        say(f"  {path}: {why}")
    if len(ds.skipped) > MAX_LISTED:
        say(f"  ... and {len(ds.skipped) - MAX_LISTED} more")
    if args.quarantine:
        moved = quarantine(ds.skipped, args.quarantine, root=ds.name)
        say(f"quarantined: moved {len(moved)} file(s) to {args.quarantine}" + (
            f" (reasons in {Path(args.quarantine) / RECORD})" if moved else ""))

    if args.write_shards:
        from ..data.shards import read_manifest, write_shards

        out = write_shards(ds, args.write_shards, samples_per_shard=args.shard_size, progress=True)
        n = len(read_manifest(out)["splits"][ds.split]["shards"])
        say(f"shards: {out} ({len(ds)} images of split {ds.split} in {n} tar file(s); train with --data {out})")
    picks, nrow, by_class = pick_examples(ds, args.n)
    if not picks:
        return 0
    items = [ds[i] for i in picks]  # an unreadable file is replaced by the next readable one, label and all
    images = torch.stack([x for x, _ in items])  # (B, 3, H, W)
    scale = math.ceil(MIN_TILE / ds.resolution) if ds.resolution < MIN_TILE else 1
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    if ds.captions is not None:
        labels = [ds.captions[i] for i in picks]
    elif ds.conditional:
        labels = [ds.classes[y] for _, y in items]
    else:
        labels = None
    out = Path(args.grid) if args.grid else Path("runs") / "data" / f"{_slug(ds.name)}-{ds.split}.png"
    save_grid(images, out, nrow=nrow, labels=labels)
    say(f"grid: {out} ({len(picks)} images{', one row per class' if by_class else ''})")
    return 0


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name or name).strip("_") or "dataset"
