"""Image files <-> tensors: the one place that turns pixels on disk into argen images and back.

Conventions: float images are (B, 3, H, W) in [-1, 1]; uint8 images are channel-last (B, H, W, 3),
the numpy/PIL layout, so `to_uint8` output (and `Dataset.uint8_images`) can go straight to PIL.

Every PIL mode is reduced to RGB the same way: alpha (RGBA, LA, PA, P with transparency) is
composited on white, palettes are expanded, 16-bit greys (I;16, I) are scaled down (not clipped),
and JPEG EXIF orientation is applied. Resizing follows the ADM / LlamaGen / VAR recipe
(https://arxiv.org/abs/2105.05233, `center_crop_arr`): box-halve while the image is at least twice
the target, then bicubic so the shorter side equals the target, then center-crop a square.

Every open is bounded by `max_pixels` (default `DEFAULT_MAX_PIXELS`, 64 Mi pixels), checked on the
header before any pixel is decoded: a 30000 x 30000 PNG is a few hundred bytes on disk but gigabytes
once decoded (a "decompression bomb"). PIL's own guard (`Image.MAX_IMAGE_PIXELS`, a process-wide
global argen never changes) only warns, and decodes, up to 179 Mpx (a 12000 x 12000 PNG took 1.65 GB),
and raises above. Both are handled here: failures are `ImageReadError`s (a DataError with `.path`
and a short `.reason`), and PIL's warning is not passed on.
"""
from __future__ import annotations

import math
import os
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


# ----------------------------------------------------------------------------- PIL -> RGB

def to_rgb(img):
    """Any PIL image -> an 8-bit RGB PIL image (alpha composited on white)."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greys: PIL's convert("L") clips at 255 instead of scaling, so scale by hand.
        # "I" is how older PIL versions open 16-bit PNGs; none of our formats store 32-bit ints.
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "F":
        arr = np.clip(np.round(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


DEFAULT_MAX_PIXELS = 8192 * 8192  # 64 Mi pixels: ~200 MB as RGB; larger files are refused before decoding


class ImageReadError(DataError):
    """One image file that cannot be used; `reason` is the short why (no path), for lists of skipped files."""

    def __init__(self, path: str | os.PathLike, reason: str, hint: str = ""):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}" + (f"; {hint}" if hint else ""))


def check_pixels(path: str | os.PathLike, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse an image whose header claims more than `max_pixels` pixels (None: no bound)."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageReadError(path, f"{w}x{h} = {w * h / 1e6:.1f} Mpx, more than max_pixels={max_pixels} "
                                   f"({max_pixels / 1e6:.1f} Mpx; a decompression bomb or an oversized image)",
                             "shrink the file, or raise max_pixels (CLI: --max-pixels) if it is genuine")


@contextmanager
def open_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Open one image lazily (header only) with its size checked against `max_pixels`; ImageReadError if not.

    PIL's DecompressionBombWarning is silenced here (the pixel bound replaces it) and its
    DecompressionBombError (above twice `Image.MAX_IMAGE_PIXELS`) becomes an ImageReadError.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"refused by PIL's decompression-bomb guard ({e})") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image file") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # permission denied, bad header, ...
        raise ImageReadError(path, f"unreadable: {e}") from None
    with img:
        check_pixels(path, img.size, max_pixels)
        yield img


def open_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Open and fully decode one image file as RGB; ImageReadError (a DataError with the path) if it cannot
    be read or claims more than `max_pixels` pixels."""
    from PIL import Image, ImageOps

    with open_image(path, max_pixels) as img:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.load()
                # Closing the file also frees `img`'s pixels, so always return a distinct (transposed) copy.
                return to_rgb(ImageOps.exif_transpose(img) or img.copy())
        except Image.DecompressionBombError as e:
            raise ImageReadError(path, f"refused by PIL's decompression-bomb guard ({e})") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated data, bad CRC, ...
            raise ImageReadError(path, f"cannot decode image ({e})", "the file is corrupt or not an image") from None


def probe_image(path: str | os.PathLike, decode: bool = False,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of a usable image file, or ImageReadError saying why not.

    The cheap check reads the header and runs PIL's `verify` (structure and CRCs, no pixels); it
    cannot see a JPEG whose scan data is cut short. `decode=True` decodes every pixel, which can.
    Both refuse empty files and headers over `max_pixels` before anything is decoded.
    """
    from PIL import Image

    try:
        empty = Path(path).stat().st_size == 0
    except OSError as e:
        raise ImageReadError(path, f"unreadable: {e}") from None
    if empty:
        raise ImageReadError(path, "empty file")
    if decode:
        return open_rgb(path, max_pixels).size
    with open_image(path, max_pixels) as img:
        size = img.size
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.verify()  # structure / CRC check without decoding the pixels
        except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:  # bad CRC, truncated, ...
            raise ImageReadError(path, f"unreadable: {e}") from None
    return size


# ----------------------------------------------------------------------------- resize / tensors

def resize_center_crop(img, size: int):
    """Resize so the shorter side is `size` (box-halving + bicubic, i.e. antialiased), then center-crop."""
    from PIL import Image

    if size < 1:
        raise ValueError(f"resolution must be a positive number of pixels, got {size}")
    while min(img.size) >= 2 * size:  # cheap exact 2x box filter first: area-style antialias
        img = img.reduce(2)
    w, h = img.size
    scale = size / min(w, h)
    if (w, h) != (max(size, round(w * scale)), max(size, round(h * scale))):
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    if (w, h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return img


def pil_to_uint8(img) -> np.ndarray:
    """RGB PIL image -> uint8 array (H, W, 3)."""
    return np.asarray(to_rgb(img), dtype=np.uint8)


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [-1, 1], (B, 3, H, W) or (3, H, W) -> uint8 channel-last (B, H, W, 3) / (H, W, 3) on CPU."""
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected images (B, 3, H, W) or (3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
    x = images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).cpu()  # (..., 3, H, W) -> (..., H, W, 3)


def from_uint8(images: Tensor | np.ndarray) -> Tensor:
    """uint8 channel-last (B, H, W, 3) or (H, W, 3) -> float (B, 3, H, W) / (3, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, Tensor) else images
    if x.dtype != torch.uint8 or x.dim() not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (B, H, W, 3) or (H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x.movedim(-1, -3).float().div(127.5).sub(1.0)  # (..., H, W, 3) -> (..., 3, H, W)


# ----------------------------------------------------------------------------- writing

def _save_png(arr: np.ndarray, path: str | os.PathLike) -> Path:
    from PIL import Image

    from .saving import atomic_path

    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format=fmt)
    return path


def save_image(image: Tensor, path: str | os.PathLike) -> Path:
    """Write one float image (3, H, W) or (1, 3, H, W) in [-1, 1] atomically (PNG unless the suffix says otherwise)."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"save_image writes one image; got a batch of {image.shape[0]} (use save_grid)")
        image = image[0]
    return _save_png(to_uint8(image).numpy(), path)


def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, labels: Sequence | None = None) -> np.ndarray:
    """Tile float images (B, 3, H, W) into one uint8 (H', W', 3) array on a white background.

    `labels` (one per image, any str()-able value) are written in a strip under each tile.
    """
    if images.dim() != 4:
        raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
    if labels is not None and len(labels) != images.shape[0]:
        raise ValueError(f"got {len(labels)} labels for {images.shape[0]} images; give one label per image")
    tiles = to_uint8(images).numpy()  # (B, H, W, 3)
    b, h, w, _ = tiles.shape
    nrow = max(1, min(nrow, b))
    ncol_rows = math.ceil(b / nrow)
    text_h = 12 if labels is not None else 0
    cell_h, cell_w = h + text_h + padding, w + padding
    grid = np.full((ncol_rows * cell_h + padding, nrow * cell_w + padding, 3), 255, dtype=np.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        y, x = padding + r * cell_h, padding + c * cell_w
        grid[y:y + h, x:x + w] = tiles[i]
    if labels is not None:
        from PIL import Image, ImageDraw, ImageFont

        canvas = Image.fromarray(grid)
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default()
        for i, lab in enumerate(labels):
            r, c = divmod(i, nrow)
            text = _fit_text(draw, str(lab), font, w)
            draw.text((padding + c * cell_w, padding + r * cell_h + h), text, fill=(0, 0, 0), font=font)
        grid = np.asarray(canvas)
    return grid


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def save_grid(images: Tensor, path: str | os.PathLike, nrow: int = 8, labels: Sequence | None = None,
              padding: int = 2) -> Path:
    """Write float images (B, 3, H, W) in [-1, 1] as one PNG grid, atomically; returns the path."""
    return _save_png(make_grid(images, nrow=nrow, padding=padding, labels=labels), path)


# ----------------------------------------------------------------------------- reading user images

def list_images(root: str | os.PathLike, errors: list[tuple[str, str]] | None = None) -> list[Path]:
    """All image files under `root` (recursive, sorted, hidden files and folders skipped): the files of a
    folder first, then each subfolder's in name order.

    A folder that cannot be listed (permissions) is never passed over silently: it is appended to
    `errors` as (folder, reason) when a list is given, else a DataError names it.
    """
    out: list[Path] = []

    def walk(folder: Path) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            reason = e.strerror or str(e)
            if errors is None:
                raise DataError(f"{folder}: cannot list this folder ({reason}); check its permissions "
                                "(chmod u+rx)") from None
            errors.append((str(folder), reason))
            return
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(Path(entry.path))
                elif is_image_file(entry.name) and entry.is_file():
                    out.append(Path(entry.path))
            except OSError:  # vanished or unstat-able entry: nothing to list
                continue
        for d in subdirs:
            walk(d)

    walk(Path(root))
    return out


def load_images(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike],
                resolution: int | None = None) -> Tensor:
    """Read user images (a file, a folder, or a list of files) into float (B, 3, H, W) in [-1, 1].

    With `resolution`, each image is resized (shorter side) and center-cropped to a square of that
    size; without it, all images must already share one size.
    """
    if isinstance(paths_or_dir, (str, os.PathLike)):
        p = Path(paths_or_dir)
        if p.is_dir():
            paths = list_images(p)
            if not paths:
                raise DataError(f"{p}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        elif p.exists():
            paths = [p]
        else:
            raise DataError(f"{p}: no such file or folder")
    else:
        paths = [Path(x) for x in paths_or_dir]
        if not paths:
            raise DataError("load_images got an empty list of paths")
    arrays = []
    for p in paths:
        img = open_rgb(p)
        if resolution is not None:
            img = resize_center_crop(img, resolution)
        arrays.append(pil_to_uint8(img))
    sizes = sorted({a.shape[:2] for a in arrays})
    if len(sizes) > 1:
        raise DataError(f"images have different sizes {sizes[:4]}; pass a resolution to resize and crop them to one size")
    return from_uint8(np.stack(arrays))
