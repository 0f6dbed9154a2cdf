"""Noto emoji from the npm package `emoji-datasource-google@16.0.0`: 3,786 colour 64x64 images with names.

https://github.com/iamcal/emoji-data. `emoji.json` lists 1,911 base emoji, each with a `name`, one of
10 `category` values and, for people, `skin_variations` (1,875 more images). Every image gets
  * label   = its category (a skin-tone variant inherits the base emoji's category); classes are
              ordered as Unicode orders them (by the smallest `sort_order` in each category);
  * caption = the lower-cased name, plus ": <tone> skin tone" for variants (CLDR style).
RGBA is composited on white. The split is fixed by a hash of the file name: 10% test, 90% train.

Sources, in order: a given `root` (the package folder holding emoji.json, or its parent); argen's
cache (~/.cache/argen/datasets/emoji-datasource-google-16.0.0, filled by scripts/setup.sh); and,
only when `download=True`, `npm pack` from the npm registry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from ..imageio import open_rgb, pil_to_uint8, resize_center_crop
from .base import ImageDataset, check_split
from .fashion_mnist import default_cache_dir

PACKAGE = "emoji-datasource-google"
VERSION = "16.0.0"
NATIVE = 64
IMAGE_DIR = "img/google/64"
TEST_PERCENT = 10
SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}


def find_root(root: str | os.PathLike | None = None) -> Path | None:
    """The package folder (holding emoji.json and img/google/64), or None."""
    base = Path(root).expanduser() if root is not None else default_cache_dir() / f"{PACKAGE}-{VERSION}"
    for d in (base, base / "package"):
        if (d / "emoji.json").is_file() and (d / IMAGE_DIR).is_dir():
            return d
    return None


def download(dest: Path) -> Path:
    """`npm pack` the package (needs the npm registry) and extract emoji.json + the 64 px images into dest."""
    if shutil.which("npm") is None:
        raise DataError(f"emoji data not found and npm is not installed to fetch it; run scripts/setup.sh "
                        f"or pass root=<folder with emoji.json and {IMAGE_DIR}>")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["npm", "pack", "-q", f"{PACKAGE}@{VERSION}"], cwd=tmp, capture_output=True, text=True)
        tgz = Path(tmp) / f"{PACKAGE}-{VERSION}.tgz"
        if r.returncode != 0 or not tgz.is_file():
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise DataError(f"emoji data not found and `npm pack {PACKAGE}@{VERSION}` failed "
                            f"({msg[-1] if msg else 'no output'}); with no network, copy the package folder "
                            f"to {dest} or pass root=<folder>")
        staging = Path(tempfile.mkdtemp(prefix=".emoji-", dir=dest.parent if dest.parent.exists() else None))
        try:
            with tarfile.open(tgz) as tar:
                keep = [m for m in tar.getmembers() if m.isfile() and (
                    m.name in ("package/emoji.json", "package/package.json")
                    or m.name.startswith(f"package/{IMAGE_DIR}/"))]
                tar.extractall(staging, members=keep, filter="data")
            dest.mkdir(parents=True, exist_ok=True)
            if (dest / "package").exists():
                shutil.rmtree(dest / "package")
            os.replace(staging / "package", dest / "package")  # appears complete or not at all
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest / "package"


def _tone_caption(key: str) -> str:
    tones = []
    for code in key.split("-"):
        if code not in SKIN_TONES:
            raise DataError(f"emoji.json: unknown skin tone modifier {code}")
        if SKIN_TONES[code] not in tones:
            tones.append(SKIN_TONES[code])
    return ", ".join(f"{t} skin tone" for t in tones)


def read_index(package_dir: Path) -> tuple[list[str], list[str], list[int], list[str]]:
    """(image file names, captions, category ids, category names) for every Google image, in Unicode order."""
    path = package_dir / "emoji.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e}); re-extract the package (scripts/setup.sh)") from None
    entries = sorted(entries, key=lambda e: e["sort_order"])
    first_seen: dict[str, int] = {}
    for e in entries:
        first_seen.setdefault(e["category"], e["sort_order"])
    classes = sorted(first_seen, key=first_seen.get)
    files, captions, labels = [], [], []
    for e in entries:
        base = e["name"].lower()
        label = classes.index(e["category"])
        if e.get("has_img_google"):
            files.append(e["image"])
            captions.append(base)
            labels.append(label)
        for key, var in sorted((e.get("skin_variations") or {}).items()):
            if var.get("has_img_google"):
                files.append(var["image"])
                captions.append(f"{base}: {_tone_caption(key)}")
                labels.append(label)
    return files, captions, labels, classes


def is_test(file_name: str) -> bool:
    """Fixed split: a stable hash of the file name (not Python's salted hash())."""
    return int.from_bytes(hashlib.sha1(file_name.encode()).digest()[:4], "big") % 100 < TEST_PERCENT


class Emoji(ImageDataset):
    """The emoji images as an argen dataset: label = category, caption = name (see module docstring)."""

    def __init__(self, split: str = "train", resolution: int | None = None, root: str | os.PathLike | None = None,
                 download: bool = True):
        check_split(split, "emoji")
        resolution = NATIVE if resolution is None else int(resolution)
        if resolution < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        package_dir = find_root(root)
        if package_dir is None:
            if root is not None:
                raise DataError(f"{root}: emoji.json and {IMAGE_DIR}/ not found there (nor under {root}/package)")
            if not download:
                raise DataError("emoji data not found: run scripts/setup.sh (npm pack "
                                f"{PACKAGE}@{VERSION}) or pass root=<folder>")
            package_dir = download_to_cache()
        files, captions, labels, classes = read_index(package_dir)
        keep = [i for i, f in enumerate(files) if split == "all" or is_test(f) == (split == "test")]
        self.package_dir = package_dir
        self.files = [files[i] for i in keep]
        self.captions = [captions[i] for i in keep]
        self.labels = np.asarray([labels[i] for i in keep], dtype=np.int64)
        self.classes = classes
        self.name = "emoji"
        self.split = split
        self.resolution = resolution
        self.skipped = []
        missing = [f for f in self.files if not (package_dir / IMAGE_DIR / f).is_file()]
        if missing:
            raise DataError(f"{len(missing)} emoji images listed in emoji.json are missing from "
                            f"{package_dir / IMAGE_DIR} (e.g. {', '.join(missing[:5])}); re-extract the package")
        self._cache: np.ndarray | None = None

    def load_uint8(self, index: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[index]
        img = open_rgb(self.package_dir / IMAGE_DIR / self.files[index])
        if img.size != (self.resolution, self.resolution):
            img = resize_center_crop(img, self.resolution)
        return pil_to_uint8(img)

    def uint8_images(self, n: int | None = None, *, indices=None) -> Tensor:
        """Decodes on first use of the whole split and keeps it (3,786 x 64 x 64 x 3 = 47 MB)."""
        if self._cache is None and indices is None and (n is None or n >= len(self)):
            self._cache = super().uint8_images().numpy()
        if self._cache is not None:
            if indices is not None:
                return torch.from_numpy(self._cache[self._indices(n, indices)])  # fancy indexing copies
            return torch.from_numpy(self._cache[:n].copy())  # a copy: callers may write into it
        return super().uint8_images(n, indices=indices)


def download_to_cache() -> Path:
    return download(default_cache_dir() / f"{PACKAGE}-{VERSION}")
