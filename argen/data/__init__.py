"""Datasets: image folders, Fashion-MNIST, emoji, and a token cache for generator training.

    ds = argen.data.load_dataset("fashion-mnist", split="test", resolution=32)
    image, label = ds[0]                 # (3, 32, 32) float in [-1, 1], int
    ds.classes, ds.num_classes, ds.captions, ds.resolution, ds.name
    ds.skipped, ds.warnings, ds.split_note   # what to tell the user (unreadable files, folder problems, splits)
    check_classes(ds, model_class_names)     # DataError listing the differences
    real = ds.uint8_images(5000)         # (5000, 32, 32, 3) uint8, fast (a slice for IDX sources)

Tar shards (`write_shards`, shards.py) load like a folder: pass the shard directory.

Names: "fashion-mnist", "emoji", or a folder path (a folder literally named like a dataset is
reached as "./emoji").
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from ..errors import DataError
from ..imageio import DEFAULT_MAX_PIXELS
from .base import SPLITS, ImageDataset, check_classes
from .emoji import Emoji
from .fashion_mnist import FashionMNIST
from .folder import TEST_FRACTION, FolderScan, ImageFolder, OnSkip, scan_folder
from .quarantine import quarantine
from .splits import evaluation_order, held_out_mask, subset_rule
from .shards import ImageShards, TokenShards, is_shard_dir, load_shards, write_shards, write_token_shards
from .token_cache import TokenCacheDataset, build_token_cache, fingerprint

DATASETS = {"fashion-mnist": FashionMNIST, "emoji": Emoji}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "emojis": "emoji"}


def dataset_names() -> list[str]:
    return list(DATASETS)


def dataset_key(name_or_path: str | os.PathLike) -> str | None:
    """The registered dataset name that `name_or_path` refers to (aliases allowed), or None for a path."""
    if isinstance(name_or_path, Path):
        return None
    key = str(name_or_path).lower()
    key = _ALIASES.get(key, key)
    return key if key in DATASETS else None


def load_dataset(name_or_path: str | os.PathLike, split: str = "train", resolution: int | None = None, *,
                 check: Literal["verify", "decode"] = "verify", on_error: Literal["skip", "raise"] = "skip",
                 on_skip: OnSkip | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 **options: Any) -> ImageDataset:
    """A dataset by name ("fashion-mnist", "emoji") or folder path; items are `(image (3,H,W) in [-1,1], label)`.

    `split` is "train", "test" or "all"; a folder without a test split holds out a fixed slice of its
    files as "test" (see `ds.split_note`). `resolution=None` keeps the native size (28, 64; for a
    folder, the median shorter side). For folders, `check` is the up-front scan ("verify": headers,
    fast; "decode": every pixel, catches truncated JPEGs), `on_error` decides whether unreadable files
    and empty/unreadable class folders are left out ("skip": listed in `ds.skipped` / `ds.warnings`;
    files that fail later, while reading, are replaced by the next readable image and passed to
    `on_skip(path, reason)`) or fail ("raise"), and `max_pixels` bounds the pixels per image (None: no
    bound). The named datasets read fixed installed files and accept these options without using them.
    Extra `options` go to the dataset class: `root=`/`download=` for the named datasets (and `fit=`
    for Fashion-MNIST); `layout=`, `progress=`, `test_fraction=`, `split_seed=` for folders.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if check not in ("verify", "decode"):
        raise ValueError(f"check must be 'verify' (header check) or 'decode' (full decode), got {check!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    key = dataset_key(name_or_path)
    if key is not None:
        return DATASETS[key](split=split, resolution=resolution, **options)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and is_shard_dir(path):  # tar shards written by write_shards
        return ImageShards(path, split=split, resolution=resolution)
    if path.is_dir():
        return ImageFolder(path, split=split, resolution=resolution, on_error=on_error, check=check,
                           on_skip=on_skip, max_pixels=max_pixels, **options)
    if path.exists():
        raise DataError(f"{path} is a file; pass a folder of images or one of: {', '.join(DATASETS)}")
    raise DataError(f"unknown dataset {str(name_or_path)!r}: not a folder and not one of {', '.join(DATASETS)}")


def uint8_images(name_or_path: str | os.PathLike, n: int | None = None, split: str = "train",
                 resolution: int | None = None, **options: Any) -> Tensor:
    """Shortcut for `load_dataset(...).uint8_images(n)`: the first n images as uint8 (N, H, W, 3)."""
    return load_dataset(name_or_path, split=split, resolution=resolution, **options).uint8_images(n)


__all__ = ["load_dataset", "uint8_images", "dataset_names", "dataset_key", "ImageDataset", "ImageFolder", "FashionMNIST",
           "Emoji", "scan_folder", "FolderScan", "check_classes", "quarantine", "evaluation_order", "held_out_mask",
           "subset_rule", "build_token_cache", "TokenCacheDataset", "fingerprint", "DEFAULT_MAX_PIXELS",
           "ImageShards", "TokenShards", "load_shards", "write_shards", "write_token_shards", "is_shard_dir",
           "TEST_FRACTION"]
