"""Image folders: one subfolder per class (class-conditional) or a flat folder (unconditional).

Layout rules (`layout="auto"`):
  * root/<class>/**/*.png ...  -> one class per immediate subfolder, searched recursively;
  * anything else (images directly under root, with or without subfolders) -> unconditional, every
    image under root (recursive), label -1.
Class ids are the sorted names of the class subfolders that exist, so they never shift: a class
folder that is empty or cannot be read keeps its id with no images and is reported (`ds.warnings`,
`scan.problems()`), or fails the load with `on_error="raise"`. Leaving it out instead would silently
give every later class a new id, and a model trained before would then be fine-tuned on wrong labels.
Formats: PNG, JPEG, WebP, BMP; every mode becomes RGB (see `argen.imageio.to_rgb`). Optional captions
(`argen.data.captions`): a `captions.jsonl` at the root, or a `name.txt` next to every `name.png`; a
missing, empty or unreadable caption leaves `captions` None and is listed in `caption_problems`.

Splits: root/train, root/test (or root/val, for split="test") are used when present. A folder without
a test split (plain, or only root/train) holds out a deterministic slice for split="test" (about
`test_fraction` of each class, chosen by a seeded hash of each file's relative path:
`splits.held_out_mask`) and split="train" leaves that slice out, so they never overlap; `ds.split_note`
says so. A folder too small to hold any out trains on every image (and split="test" fails).
split="all" is everything under root.

The scan checks every file up front (empty, unidentifiable, failing PIL's `verify`, a header over
`max_pixels`; with `check="decode"` a full decode, which also catches truncated JPEGs). Bad files are
either left out and listed in `skipped` (`on_error="skip"`), or reported together in one DataError
(`on_error="raise"`). A file that passes the scan but fails to decode while training reads it (a
truncated JPEG under the default check) is, with "skip", replaced by the next readable image (index
i + 1, i + 2, ...: a function of the files on disk only, so a resumed run reads exactly what an
uninterrupted one would), added to `skipped` and passed to `on_skip(path, reason)`; with "raise" it
fails with a one-line DataError naming the file. Files are never moved while a dataset reads them
(that would change its length and so break exact resumption); `argen.data.quarantine` moves the
files a scan rejected, before training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from ..errors import DataError
from ..imageio import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageReadError, is_image_file, list_images,
                       open_rgb, pil_to_uint8, probe_image, resize_center_crop)
from .base import ImageDataset, check_split
from .captions import folder_captions
from .splits import held_out_mask

MAX_LISTED = 10  # bad paths shown in an error message; the rest are counted
TEST_FRACTION = 0.05  # held out as split="test" from a folder without a test split

OnSkip = Callable[[str, str], None]


def format_bad_files(bad: list[tuple[str, str]], limit: int = MAX_LISTED) -> str:
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:limit])
    return shown + (f"; ... and {len(bad) - limit} more" if len(bad) > limit else "")


def check_image_file(path: Path, decode: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int | None, str | None]:
    """Validity check of one file -> (shorter side, None) or (None, reason); see `argen.imageio.probe_image`."""
    try:
        return min(probe_image(path, decode=decode, max_pixels=max_pixels)), None
    except ImageReadError as e:
        return None, e.reason


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass
class FolderScan:
    """What scanning a folder found: valid image paths with labels, class names, skipped files and folders."""

    root: Path
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # shorter side of each valid image
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)  # class folders without image files (ids kept)
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason) not listable
    held_out: int = 0  # files set aside as the other split (subset "train" / "test")

    def problems(self) -> list[str]:
        """One line per class folder or subfolder that gave no images (empty or unreadable)."""
        lines = []
        for folder, why in self.unreadable_folders:
            rel = Path(folder).relative_to(self.root).parts if Path(folder).is_relative_to(self.root) else ()
            name = rel[0] if rel else None
            cls = f" (class {name!r} keeps id {self.classes.index(name)})" if name in self.classes else ""
            lines.append(f"folder {folder} cannot be read ({why}); its images are left out{cls}")
        for c in self.empty_classes:
            lines.append(f"class folder {self.root / c} has no image files; class {c!r} keeps id "
                         f"{self.classes.index(c)} with no images")
        return lines


def _subfolders(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"{root}: cannot list this folder ({e.strerror or e}); check its permissions "
                        "(chmod u+rx)") from None


def scan_folder(root: str | os.PathLike, layout: Literal["auto", "classes", "flat"] = "auto",
                check: Literal["verify", "decode"] = "verify", progress: bool = False,
                classes: list[str] | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                subset: Literal["all", "train", "test"] = "all", test_fraction: float = TEST_FRACTION,
                split_seed: int = 0) -> FolderScan:
    """List and check every image under `root`; see the module docstring for the layout rules.

    `classes` fixes the class list (and so the label ids) when several split folders must agree.
    `subset` "train" / "test" keeps the rest / only the held-out slice (`test_fraction` of each
    class, seeded by `split_seed`), chosen from the file names before any file is checked, so the
    slice does not depend on `check` or on which files turn out unreadable.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder" + (" (it is a file; pass the folder that holds the images)"
                                                     if root.is_file() else ""))
    if check not in ("verify", "decode"):
        raise ValueError(f"check must be 'verify' (header check) or 'decode' (full decode), got {check!r}")
    if layout not in ("auto", "classes", "flat"):
        raise ValueError(f"layout must be 'auto', 'classes' or 'flat', got {layout!r}")
    if subset not in ("all", "train", "test"):
        raise ValueError(f"subset must be 'all', 'train' or 'test', got {subset!r}")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels (or None: no bound), got {max_pixels}")
    scan = FolderScan(root=root)
    subdirs = _subfolders(root)
    root_images = [p for p in root.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    errors: list[tuple[str, str]] = []
    per_class = {d.name: list_images(d, errors=errors) for d in subdirs}
    if layout == "auto":
        layout = "classes" if any(per_class.values()) and not root_images else "flat"
    if layout == "classes":
        if not any(per_class.values()):
            unreadable = f" ({format_bad_files(errors)})" if errors else ""
            raise DataError(f"{root}: no class subfolders with images{unreadable}; use layout='flat' for a flat folder")
        scan.classes = sorted(set(per_class) | set(classes or ()))
        unreadable_tops = {Path(f) for f, _ in errors}
        scan.empty_classes = [c for c in sorted(per_class) if not per_class[c] and root / c not in unreadable_tops]
        candidates = [(p, i) for i, c in enumerate(scan.classes) for p in per_class.get(c, ())]
    else:  # every image under root: the files directly in it, then each subfolder's (list_images' order)
        candidates = [(p, -1) for p in sorted(root_images) + [q for d in subdirs for q in per_class[d.name]]]
    scan.unreadable_folders = errors
    if not candidates:
        raise DataError(f"{root}: no image files ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) in this folder "
                        "or its subfolders" + (f"; cannot read {format_bad_files(errors)}" if errors else ""))
    if subset != "all":
        try:
            held = held_out_mask([p.relative_to(root).as_posix() for p, _ in candidates],
                                 [c for _, c in candidates], test_fraction, split_seed)
        except DataError:
            if subset == "test":
                raise
            held = np.zeros(len(candidates), dtype=bool)  # too few to hold any out: train on every image
        keep = held if subset == "test" else ~held
        scan.held_out = int((~keep).sum())
        candidates = [c for c, k in zip(candidates, keep) if k]
    it = candidates
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(candidates, desc=f"checking {root.name}", unit="img")
    for path, label in it:
        size, reason = check_image_file(path, decode=check == "decode", max_pixels=max_pixels)
        if reason is None:
            scan.paths.append(path)
            scan.labels.append(label)
            scan.sizes.append(size)
        else:
            scan.skipped.append((str(path), reason))
    return scan


def _split_source(root: Path, split: str) -> tuple[Path, Literal["all", "train", "test"], str | None]:
    """(folder to scan, subset of it, note) for `split` of `root`; see the module docstring."""
    if split == "all":
        return root, "all", None
    has_test = (root / "test").is_dir() or (root / "val").is_dir()
    if has_test:
        if (root / split).is_dir():
            return root / split, "all", None
        if split == "test":
            return root / "val", "all", f"{root} has no test/ subfolder: split 'test' reads {root / 'val'}"
        return root, "all", None  # split "train" without root/train next to a test split: the folder as it is
    source = root / "train" if (root / "train").is_dir() else root
    return source, split, None  # the note needs the counts: ImageFolder writes it after the scan


class ImageFolder(ImageDataset):
    """A folder of images as an argen dataset (see the module docstring).

    `on_skip(path, reason)` is called for every file that fails to decode while the dataset reads it
    (in the process that reads it: with DataLoader workers, in the worker, so it must be picklable there).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", resolution: int | None = None,
                 on_error: Literal["skip", "raise"] = "skip", layout: Literal["auto", "classes", "flat"] = "auto",
                 check: Literal["verify", "decode"] = "verify", progress: bool = False,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, on_skip: OnSkip | None = None,
                 test_fraction: float = TEST_FRACTION, split_seed: int = 0):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' (leave bad files out) or 'raise', got {on_error!r}")
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        root = Path(root).expanduser()
        check_split(split, str(root))
        data_root, subset, note = _split_source(root, split)
        # With split subfolders, label ids come from the union of their class folders so that
        # train and test agree even when a class is missing from one of them.
        split_dirs = [root / s for s in ("train", "test", "val") if (root / s).is_dir()]
        union = sorted({d.name for s in split_dirs for d in _subfolders(s)}) if data_root != root else None
        scan = scan_folder(data_root, layout=layout, check=check, progress=progress, classes=union,
                           max_pixels=max_pixels, subset=subset, test_fraction=test_fraction, split_seed=split_seed)
        problems = scan.problems()
        if problems and on_error == "raise":
            raise DataError(f"{len(problems)} folder problem(s) under {data_root}: {'; '.join(problems)}. Add images "
                            "or fix the permissions (chmod -R u+rX), remove the folder, or pass on_error='skip' "
                            "(CLI: --on-error skip) to go on without their images")
        if scan.skipped and on_error == "raise":
            raise DataError(f"{len(scan.skipped)} unreadable image file(s) under {data_root}: "
                            f"{format_bad_files(scan.skipped)}. Fix or remove them, or pass on_error='skip' "
                            "(CLI: --on-error skip) to leave them out")
        if not scan.paths:
            raise DataError(f"{data_root}: none of the {len(scan.skipped)} image files can be read: "
                            f"{format_bad_files(scan.skipped)}")
        if subset == "train" and scan.held_out == 0:
            note = (f"{root} has no test/ subfolder and too few images to hold some out: split 'train' is every "
                    "image, and split 'test' fails")
        elif subset != "all":
            n_test = len(scan.paths) + len(scan.skipped) if subset == "test" else scan.held_out
            note = (f"{root} has no test/ subfolder: split 'test' is a held-out ~{test_fraction:.0%} of {data_root} "
                    f"({n_test} files, chosen by a hash of their names, seed {split_seed}); split 'train' leaves "
                    "them out")
        self.root = data_root
        self.name = str(root)
        self.split = split
        self.split_note = note
        self.paths = scan.paths
        self.classes = scan.classes
        self.labels = np.asarray(scan.labels, dtype=np.int64)
        self.skipped = scan.skipped
        self.warnings = problems
        self.empty_classes = scan.empty_classes
        self.unreadable_folders = scan.unreadable_folders
        self.captions, self.caption_problems = folder_captions([data_root, root], scan.paths)
        self.check, self.on_error, self.max_pixels, self.on_skip = check, on_error, max_pixels, on_skip
        self._bad: set[int] = set()  # indices found unreadable while reading (per process)
        self._grey: bool | None = None
        # Default size: the median shorter side, so one odd image does not set the size for all.
        self.resolution = int(resolution if resolution is not None else np.median(scan.sizes))

    @property
    def grey(self) -> bool:
        """Whether every file is stored greyscale (PIL modes 1, L, LA, I, I;16, F), read from the headers once."""
        if self._grey is None:
            from PIL import Image

            def is_grey(path: Path) -> bool:
                try:
                    with Image.open(path) as img:
                        return img.mode in GREY_MODES
                except (OSError, ValueError):
                    return False

            self._grey = bool(self.paths) and all(is_grey(p) for p in self.paths)
        return self._grey

    def load_uint8(self, index: int) -> np.ndarray:
        """Image `index` at the dataset's resolution; ImageReadError if the file cannot be decoded."""
        return pil_to_uint8(resize_center_crop(open_rgb(self.paths[index], self.max_pixels), self.resolution))

    def read(self, index: int) -> tuple[np.ndarray, int]:
        """Item `index`, or with on_error="skip" the next readable one (i + 1, i + 2, ... wrapping around)."""
        n = len(self)
        for step in range(n):
            j = (index + step) % n
            if j in self._bad:
                continue
            try:
                return self.load_uint8(j), int(self.labels[j])
            except ImageReadError as e:
                if self.on_error == "raise":
                    hint = (" (it passed the scan's header check; check='decode', CLI --check decode, finds "
                            "such files before training)" if self.check == "verify" else "")
                    raise DataError(f"{e}{hint}; or pass on_error='skip' (CLI: --on-error skip) to replace it "
                                    "with the next readable image") from None
                self._bad.add(j)
                self.skipped.append((e.path, e.reason))
                if self.on_skip is not None:
                    self.on_skip(e.path, e.reason)
        raise DataError(f"{self.root}: none of the {n} images can be decoded (e.g. {format_bad_files(self.skipped, 3)})")
