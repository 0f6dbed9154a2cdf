"""Image folders: one subfolder per class (class-conditional) or a flat folder (unconditional).

Layout rules (`layout="auto"`):
  * root/<class>/**/*.png ...  -> one class per immediate subfolder, sorted by name, searched recursively;
  * anything else (images directly under root, with or without subfolders) -> unconditional, every
    image under root (recursive), label -1.
If root has a subfolder named like the split (root/train, root/test), that subfolder is used.
Formats: PNG, JPEG, WebP, BMP; every mode becomes RGB (see `argen.imageio.to_rgb`). Optional captions:
a `name.txt` next to every `name.png` (used only when every image has one).

The scan checks every file up front (empty, unidentifiable, failing PIL's `verify`; with
`check="decode"` a full decode, which also catches truncated JPEGs) so training does not die
mid-epoch. Bad files are either left out and listed in `skipped` (`on_error="skip"`), or reported
together in one DataError (`on_error="raise"`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError
from ..imageio import IMAGE_EXTENSIONS, is_image_file, list_images, open_rgb, pil_to_uint8, resize_center_crop
from .base import ImageDataset, check_split

MAX_LISTED = 10  # bad paths shown in an error message; the rest are counted


def format_bad_files(bad: list[tuple[str, str]], limit: int = MAX_LISTED) -> str:
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:limit])
    return shown + (f"; ... and {len(bad) - limit} more" if len(bad) > limit else "")


def check_image_file(path: Path, decode: bool = False) -> tuple[int | None, str | None]:
    """Cheap validity check of one file -> (shorter side, None) or (None, reason)."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return None, "empty file"
        if decode:
            return min(open_rgb(path).size), None
        with Image.open(path) as img:
            size = min(img.size)
            img.verify()  # structure / CRC check without decoding the pixels
        return size, None
    except DataError as e:
        return None, str(e).split(": ", 1)[-1]
    except UnidentifiedImageError:
        return None, "not a recognised image file"
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated, bad CRC, permission denied, ...
        return None, f"unreadable: {e}"


@dataclass
class FolderScan:
    """What scanning a folder found: valid image paths with labels, class names, skipped files."""

    root: Path
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # shorter side of each valid image
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan_folder(root: str | os.PathLike, layout: Literal["auto", "classes", "flat"] = "auto",
                check: Literal["verify", "decode"] = "verify", progress: bool = False,
                classes: list[str] | None = None) -> FolderScan:
    """List and check every image under `root`; see the module docstring for the layout rules.

    `classes` fixes the class list (and so the label ids) when several split folders must agree.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder" + (" (it is a file; pass the folder that holds the images)"
                                                     if root.is_file() else ""))
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    root_images = [p for p in root.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    per_class = {d.name: list_images(d) for d in subdirs}
    per_class = {k: v for k, v in per_class.items() if v}
    if layout == "auto":
        layout = "classes" if per_class and not root_images else "flat"
    scan = FolderScan(root=root)
    if layout == "classes":
        if not per_class:
            raise DataError(f"{root}: no class subfolders with images; use layout='flat' for a flat folder")
        scan.classes = sorted(set(per_class) | set(classes or ()))
        candidates = [(p, i) for i, c in enumerate(scan.classes) for p in per_class.get(c, ())]
    elif layout == "flat":
        candidates = [(p, -1) for p in list_images(root)]
    else:
        raise ValueError(f"layout must be 'auto', 'classes' or 'flat', got {layout!r}")
    if not candidates:
        raise DataError(f"{root}: no image files ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) in this folder "
                        "or its subfolders")
    if check not in ("verify", "decode"):
        raise ValueError(f"check must be 'verify' (header check) or 'decode' (full decode), got {check!r}")
    it = candidates
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(candidates, desc=f"checking {root.name}", unit="img")
    for path, label in it:
        size, reason = check_image_file(path, decode=check == "decode")
        if reason is None:
            scan.paths.append(path)
            scan.labels.append(label)
            scan.sizes.append(size)
        else:
            scan.skipped.append((str(path), reason))
    return scan


def read_captions(paths: list[Path]) -> list[str] | None:
    """Captions from `name.txt` sidecars, only when every image has one."""
    sidecars = [p.with_suffix(".txt") for p in paths]
    if not sidecars or not all(s.is_file() for s in sidecars):
        return None
    return [s.read_text(encoding="utf-8", errors="replace").strip() for s in sidecars]


class ImageFolder(ImageDataset):
    """A folder of images as an argen dataset (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", resolution: int | None = None,
                 on_error: Literal["skip", "raise"] = "skip", layout: Literal["auto", "classes", "flat"] = "auto",
                 check: Literal["verify", "decode"] = "verify", progress: bool = False):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' (leave bad files out) or 'raise', got {on_error!r}")
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        root = Path(root).expanduser()
        check_split(split, str(root))
        data_root = root
        if split != "all" and (root / split).is_dir():
            data_root = root / split
        elif split == "test":
            raise DataError(f"{root}: no '{split}' subfolder; make root/train and root/test folders, "
                            "or use split='train' / 'all' for the whole folder")
        # With split subfolders, label ids come from the union of their class folders so that
        # train and test agree even when a class is missing from one of them.
        split_dirs = [root / s for s in ("train", "test", "val") if (root / s).is_dir()]
        union = sorted({d.name for s in split_dirs for d in s.iterdir()
                        if d.is_dir() and not d.name.startswith(".") and list_images(d)}) if data_root != root else None
        scan = scan_folder(data_root, layout=layout, check=check, progress=progress, classes=union)
        if scan.skipped and on_error == "raise":
            raise DataError(f"{len(scan.skipped)} unreadable image file(s) under {data_root}: "
                            f"{format_bad_files(scan.skipped)}. Fix or remove them, or pass on_error='skip' "
                            "(CLI: --on-error skip) to leave them out")
        if not scan.paths:
            raise DataError(f"{data_root}: none of the {len(scan.skipped)} image files can be read: "
                            f"{format_bad_files(scan.skipped)}")
        self.root = data_root
        self.name = str(root)
        self.split = split
        self.paths = scan.paths
        self.classes = scan.classes
        self.labels = np.asarray(scan.labels, dtype=np.int64)
        self.skipped = scan.skipped
        self.captions = read_captions(scan.paths)
        # Default size: the median shorter side, so one odd image does not set the size for all.
        self.resolution = int(resolution if resolution is not None else np.median(scan.sizes))

    def load_uint8(self, index: int) -> np.ndarray:
        try:
            img = open_rgb(self.paths[index])
        except DataError as e:
            raise DataError(f"{e} (it passed the scan's header check; check='decode' catches such files "
                            "before training)") from None
        return pil_to_uint8(resize_center_crop(img, self.resolution))
