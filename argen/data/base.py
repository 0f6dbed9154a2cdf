"""The dataset contract shared by image folders, Fashion-MNIST and emoji.

`ds[i]` is `(image, label)`: image a float tensor (3, H, W) in [-1, 1] with H = W = `ds.resolution`,
label an int (-1 when the dataset is unconditional). Every dataset also exposes `classes`,
`captions`, `labels` (all labels as an int64 array, no decoding) and `uint8_images(n)`, a fast path
to the first n images as uint8 (N, H, W, 3) for evaluation (vectorised where the source allows).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

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

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} ({len(self)} images)")
        index = index % len(self)
        # np.array copies: sources may hand out read-only views (PIL buffers, memmaps, cached arrays).
        return from_uint8(torch.from_numpy(np.array(self.load_uint8(index)))), int(self.labels[index])

    def uint8_images(self, n: int | None = None) -> Tensor:
        """The first `n` images (all when None) as uint8 (N, H, W, 3)."""
        n = len(self) if n is None else min(n, len(self))
        out = np.empty((n, self.resolution, self.resolution, 3), dtype=np.uint8)
        for i in range(n):
            out[i] = self.load_uint8(i)
        return torch.from_numpy(out)

    def class_counts(self) -> dict[str, int]:
        """Images per class name (empty when unconditional)."""
        counts = Counter(self.labels.tolist())
        return {c: counts.get(i, 0) for i, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        kind = f"{self.num_classes} classes" if self.conditional else "unconditional"
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, " \
               f"resolution={self.resolution}, {kind})"
