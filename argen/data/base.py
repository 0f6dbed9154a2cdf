"""The dataset contract shared by image folders, Fashion-MNIST and emoji.

`ds[i]` is `(image, label)`: image a float tensor (3, H, W) in [-1, 1] with H = W = `ds.resolution`,
label an int (-1 when the dataset is unconditional). Every dataset also exposes `classes`,
`captions`, `labels` (all labels as an int64 array, no decoding), `uint8_images(n)`, a fast path
to the first n images (or given `indices`) as uint8 (N, H, W, 3) for evaluation (vectorised where
the source allows), and what a reader should be told: `skipped` (unreadable files, with why),
`warnings` (problems that did not stop loading, e.g. an empty class folder) and `split_note` (how
the split was made when the data had no such split, else None).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import DataError
from ..imageio import from_uint8

SPLITS = ("train", "test", "all")


def check_split(split: str, name: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"{name}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


class ImageDataset(Dataset):
    """Base class: subclasses set the attributes below and implement `load_uint8(i)`."""

    name: str
    split: str
    resolution: int
    classes: list[str]
    captions: list[str] | None
    labels: np.ndarray  # (N,) int64; -1 everywhere when unconditional
    skipped: list[tuple[str, str]]  # (path, reason) of files left out by on_error="skip"
    warnings: Sequence[str] = ()  # one line per problem that did not stop loading
    split_note: str | None = None  # how the split was made, when the source has no such split
    grey: bool = False  # every image is greyscale (served as 3 equal channels): a tokenizer then decodes grey

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def load_uint8(self, index: int) -> np.ndarray:
        """Image `index` as uint8 (H, W, 3) at `self.resolution`."""
        raise NotImplementedError

    def read(self, index: int) -> tuple[np.ndarray, int]:
        """(uint8 image (H, W, 3), label) of item `index`; image folders override it to replace unreadable files."""
        return self.load_uint8(index), int(self.labels[index])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} ({len(self)} images)")
        image, label = self.read(index % len(self))
        # np.array copies: sources may hand out read-only views (PIL buffers, memmaps, cached arrays).
        return from_uint8(torch.from_numpy(np.array(image))), label

    def uint8_images(self, n: int | None = None, *, indices: Sequence[int] | np.ndarray | None = None) -> Tensor:
        """The first `n` images (all when None), or the images at `indices`, as uint8 (N, H, W, 3)."""
        idx = self._indices(n, indices)
        out = np.empty((len(idx), self.resolution, self.resolution, 3), dtype=np.uint8)
        for k, i in enumerate(idx):
            out[k] = self.read(int(i))[0]
        return torch.from_numpy(out)

    def _indices(self, n: int | None, indices) -> np.ndarray:
        if indices is not None:
            if n is not None:
                raise ValueError("pass n (the first n images) or indices, not both")
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
                raise IndexError(f"indices must be in [0, {len(self)}) for {self.name}")
            return idx
        return np.arange(len(self) if n is None else min(n, len(self)))

    def class_counts(self) -> dict[str, int]:
        """Images per class name (empty when unconditional)."""
        counts = Counter(self.labels.tolist())
        return {c: counts.get(i, 0) for i, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        kind = f"{self.num_classes} classes" if self.conditional else "unconditional"
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, " \
               f"resolution={self.resolution}, {kind})"


def check_classes(dataset: ImageDataset | Sequence[str], expected: Sequence[str], *, what: str = "the model") -> None:
    """Raise DataError unless the data's class names equal `expected`, in the same order (so the same ids).

    A model conditioned on class ids (its conditioner's `class_names`) must be fine-tuned or resumed
    on data whose class folders give the same name -> id map; a renamed, added or removed class
    folder would silently relabel every class after it. The message lists what differs.
    """
    have = list(dataset.classes if hasattr(dataset, "classes") else dataset)
    want = list(expected)
    if have == want:
        return
    name = getattr(dataset, "name", "the data")
    parts = []
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    if missing:
        parts.append(f"in {what} but not in the data: {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"in the data but not in {what}: {', '.join(map(repr, extra))}")
    moved = [f"{c!r} is id {want.index(c)} in {what}, {have.index(c)} in the data" for c in want
             if c in have and want.index(c) != have.index(c)]
    if moved:
        parts.append("different ids: " + "; ".join(moved[:5]) + (f"; ... and {len(moved) - 5} more" if len(moved) > 5 else ""))
    raise DataError(f"the classes of {name} ({len(have)}) do not match the {len(want)} of {what}: {'; '.join(parts)}. "
                    "Use data with the same class folders (ids are the sorted folder names), or train a new model "
                    "on this data")


def read_format_file(path: Path, *, fmt: str, version: int, what: str, missing: str, rebuild: str) -> dict[str, Any]:
    """The JSON metadata file `path` of an on-disk format (`format` == fmt, `version` <= version), or a
    DataError saying what is wrong with it: `what` names the thing (e.g. "token cache"), `missing` says how
    to make one, `rebuild` how to replace a broken one."""
    try:
        meta = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise DataError(f"{path.parent} is not a {what} ({path.name} not found); {missing}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e.msg}); {rebuild}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not valid JSON (not UTF-8 text); {rebuild}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise DataError(f"{path} was not written by argen as a {what}; {rebuild}")
    if meta.get("version", 0) > version:
        raise DataError(f"{path.parent}: {what} version {meta['version']} is newer than this argen ({version}); "
                        "upgrade argen")
    return meta
