"""Fashion-MNIST (Xiao et al. 2017, https://arxiv.org/abs/1708.07747): 70k 28x28 grey images, 10 classes.

Sources, in order: a given `root`; the Debian package `dataset-fashion-mnist`
(/usr/share/datasets/fashion-mnist/*.gz, installed by scripts/setup.sh); argen's cache
(~/.cache/argen/datasets/FashionMNIST/raw, where torchvision puts a download); and, only when none
of those exist and `download=True`, torchvision's downloader (needs internet).

The IDX arrays are read once per process into uint8 numpy arrays, so `uint8_images(5000)` is a
slice, not 5000 PIL decodes. Grey is repeated into 3 channels. Resolution: native 28 by default;
29..32 zero-pads the border (exact pixels, black like the background; 32 suits 4x/8x/16x
downsampling tokenizers); any other size resizes with antialiased bicubic interpolation.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .base import ImageDataset, check_split

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NATIVE = 28
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def default_cache_dir() -> Path:
    """argen's data cache (scripts/setup.sh honours $ARGEN_CACHE; the library uses the default)."""
    return Path.home() / ".cache" / "argen" / "datasets"


# ----------------------------------------------------------------------------- IDX files

def _find(root: Path, stem: str) -> Path | None:
    for d in (root, root / "FashionMNIST" / "raw", root / "raw"):
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def find_root(root: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding all four IDX files (gz or plain), or None."""
    candidates = [Path(root).expanduser()] if root is not None else [DEBIAN_ROOT, default_cache_dir()]
    for c in candidates:
        if all(_find(c, stem) for pair in FILES.values() for stem in pair):
            return c
    return None


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a read-only numpy array of its declared shape.

    Cached per process (keyed on path, size and mtime, so a replaced file is re-read).
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    return _read_idx(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _read_idx(path: str, size: int, mtime_ns: int) -> np.ndarray:
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e}); the file is truncated or corrupt") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but the file holds {len(data) - offset} bytes; "
                        "the file is truncated")
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)
    arr.flags.writeable = False
    return arr


def download(cache: Path) -> Path:
    """Fetch Fashion-MNIST with torchvision into `cache` (needs internet)."""
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        raise DataError("Fashion-MNIST not found locally and torchvision is not installed to download it; "
                        "install the Debian package: apt-get install dataset-fashion-mnist") from None
    try:
        for train in (True, False):
            FashionMNIST(str(cache), train=train, download=True)
    except Exception as e:  # network errors come in many types (URLError, RuntimeError, OSError)
        raise DataError(f"Fashion-MNIST is not installed and downloading it failed ({type(e).__name__}: {e}). "
                        "Offline, install the Debian package: apt-get install dataset-fashion-mnist "
                        "(or run scripts/setup.sh), or pass root=<folder with the IDX .gz files>") from None
    return cache


def load_arrays(split: str, root: str | os.PathLike | None = None, download_ok: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels (N,) of `split` ("train", "test" or "all")."""
    found = find_root(root)
    if found is None:
        if root is not None:
            raise DataError(f"{root}: Fashion-MNIST IDX files not found (need {', '.join(p + '.gz' for v in FILES.values() for p in v)})")
        if not download_ok:
            raise DataError("Fashion-MNIST not found: install the Debian package "
                            "(apt-get install dataset-fashion-mnist, or scripts/setup.sh) or pass root=<folder>")
        found = download(default_cache_dir())
        if find_root(found) is None:
            raise DataError(f"torchvision's download into {found} did not produce the IDX files")
    parts = ["train", "test"] if split == "all" else [split]
    images, labels = [], []
    for part in parts:
        img_stem, lab_stem = FILES[part]
        x, y = read_idx(str(_find(found, img_stem))), read_idx(str(_find(found, lab_stem)))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{found}: {part} images {x.shape} and labels {y.shape} do not match")
        images.append(x)
        labels.append(y.astype(np.int64))
    if len(parts) == 1:
        return images[0], labels[0]
    return np.concatenate(images), np.concatenate(labels)


# ----------------------------------------------------------------------------- dataset

def fit_grey(x: Tensor, resolution: int, fit: str) -> Tensor:
    """uint8 (N, 28, 28) -> uint8 (N, R, R, 3): pad or resize, then grey -> RGB."""
    if resolution != NATIVE:
        if fit == "pad":
            lo = (resolution - NATIVE) // 2
            hi = resolution - NATIVE - lo
            x = torch.nn.functional.pad(x, (lo, hi, lo, hi))  # zero = background
        else:
            y = torch.nn.functional.interpolate(x[:, None].float(), size=(resolution, resolution), mode="bicubic",
                                                antialias=True, align_corners=False)
            x = y[:, 0].round().clamp(0, 255).to(torch.uint8)
    return x[..., None].expand(*x.shape, 3)  # (N, R, R) -> (N, R, R, 3)


class FashionMNIST(ImageDataset):
    """Fashion-MNIST as an argen dataset; `fit` is "auto" (pad for 29..32, else resize), "pad" or "resize"."""

    def __init__(self, split: str = "train", resolution: int | None = None, root: str | os.PathLike | None = None,
                 fit: Literal["auto", "pad", "resize"] = "auto", download: bool = True):
        check_split(split, "fashion-mnist")
        resolution = NATIVE if resolution is None else int(resolution)
        if resolution < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        if fit == "auto":
            fit = "pad" if NATIVE < resolution <= 32 else "resize"
        if fit not in ("pad", "resize"):
            raise ValueError(f"fit must be 'auto', 'pad' or 'resize', got {fit!r}")
        if fit == "pad" and resolution < NATIVE:
            raise ValueError(f"cannot pad 28x28 images to {resolution}; use fit='resize' or a resolution >= 28")
        self.images, self.labels = load_arrays(split, root, download_ok=download)
        self.name = "fashion-mnist"
        self.split = split
        self.resolution = resolution
        self.fit = fit
        self.classes = list(CLASSES)
        self.captions = None
        self.grey = True
        self.skipped = []

    def load_uint8(self, index: int) -> np.ndarray:
        return fit_grey(torch.from_numpy(self.images[index:index + 1].copy()), self.resolution, self.fit)[0].numpy()

    def uint8_images(self, n: int | None = None, chunk: int = 4096, *, indices=None) -> Tensor:
        if indices is None:
            n = len(self) if n is None else min(n, len(self))
            src = torch.from_numpy(self.images[:n].copy())
        else:
            idx = self._indices(n, indices)
            n, src = len(idx), torch.from_numpy(self.images[idx])  # fancy indexing copies
        if self.resolution == NATIVE or n == 0:
            return src[..., None].expand(n, NATIVE, NATIVE, 3).contiguous()
        # Chunks bound the float intermediate of a resize (70k x 64 x 64 floats would be 1 GB).
        return torch.cat([fit_grey(src[i:i + chunk], self.resolution, self.fit).contiguous()
                          for i in range(0, n, chunk)])
