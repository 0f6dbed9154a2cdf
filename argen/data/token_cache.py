"""Token cache: encode a whole dataset once with a frozen tokenizer, then train generators on the tokens.

Generator training reads the same images every epoch through a tokenizer that does not change, so
the tokens are computed once (as LlamaGen's `extract_codes` and VAR's cached features do) and kept in
a directory:

    PATH/tokens.npy     (N, *token_shape) numpy array, read back as a memmap
    PATH/labels.npy     (N,) int64
    PATH/captions.json  only when the dataset has captions
    PATH/text.npy       (N, T, D) float16 features of the captions by a frozen text encoder, and
    PATH/text_mask.npy  (N, T) bool, only when built with `text_encoder=` (so text-conditional training
                        never re-runs the encoder)
    PATH/meta.json      shape, dtype, dataset name/split/resolution, classes, tokenizer hash, text encoder

The directory is written under a temporary name and renamed when complete, so a crash never leaves
a half-written cache. Readers pass what they expect (tokenizer hash, dataset, split, resolution) and
a cache built for something else is refused instead of silently training on the wrong tokens.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .base import read_format_file

FORMAT = "argen-token-cache"
VERSION = 1
META, TOKENS, LABELS, CAPTIONS = "meta.json", "tokens.npy", "labels.npy", "captions.json"
TEXT, TEXT_MASK = "text.npy", "text_mask.npy"
CHECKED_KEYS = ("tokenizer_hash", "dataset", "split", "resolution", "num_samples")


def fingerprint(module: nn.Module) -> str:
    """A short hash of a model's config and weights, to pass as `tokenizer_hash`."""
    h = hashlib.sha256()
    cfg = getattr(module, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    return read_format_file(path / META, fmt=FORMAT, version=VERSION, what="token cache",
                            missing="build it with build_token_cache",
                            rebuild=f"delete {path} and rebuild the cache")


def check_meta(meta: dict[str, Any], expect: dict[str, Any], path: Path) -> None:
    """Raise DataError listing every expected key whose cached value differs."""
    wrong = [f"{k}: cache has {meta.get(k)!r}, expected {v!r}" for k, v in expect.items()
             if v is not None and meta.get(k) != v]
    if wrong:
        raise DataError(f"token cache {path} was built for something else ({'; '.join(wrong)}); rebuild it with "
                        f"build_token_cache(..., overwrite=True) or delete {path}")


def _expected(dataset: Dataset, tokenizer_hash: str, text_encoder: Any = None) -> dict[str, Any]:
    return {"tokenizer_hash": tokenizer_hash, "dataset": getattr(dataset, "name", type(dataset).__name__),
            "split": getattr(dataset, "split", None), "resolution": getattr(dataset, "resolution", None),
            "num_samples": len(dataset), "text_encoder": _text_key(text_encoder)}


def _text_key(text_encoder: Any) -> dict[str, Any] | None:
    if text_encoder is None:
        return None
    return {"name": text_encoder.name, "max_length": text_encoder.max_length, "dim": text_encoder.dim}


def _write_text_features(text_encoder: Any, captions: list[str], staging: Path, batch_size: int,
                         progress: bool) -> None:
    """Encode every caption once: text.npy (N, T, D) float16 + text_mask.npy (N, T) bool."""
    n, T, D = len(captions), text_encoder.max_length, text_encoder.dim
    feats = np.lib.format.open_memmap(staging / TEXT, mode="w+", dtype=np.float16, shape=(n, T, D))
    masks = np.zeros((n, T), dtype=bool)
    it = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="encoding captions", unit="batch")
    for start in it:
        f, m = text_encoder.encode(captions[start:start + batch_size])
        feats[start:start + len(f)] = f.cpu().numpy().astype(np.float16)
        masks[start:start + len(f)] = m.cpu().numpy()
    feats.flush()
    del feats
    np.save(staging / TEXT_MASK, masks)


def _as_numpy(tokens: Any, dtype: np.dtype | None, batch: int) -> np.ndarray:
    if not isinstance(tokens, Tensor):
        raise TypeError(f"encode_fn must return a Tensor (B, ...) of tokens, got {type(tokens).__name__}")
    if tokens.shape[0] != batch:
        raise ValueError(f"encode_fn returned {tokens.shape[0]} rows for a batch of {batch} images")
    arr = tokens.detach().float().cpu().numpy() if tokens.dtype in (torch.bfloat16, torch.float16) \
        else tokens.detach().cpu().numpy()
    if dtype is None:
        return arr
    if np.issubdtype(dtype, np.integer) and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise ValueError(f"token ids {arr.min()}..{arr.max()} do not fit in {np.dtype(dtype).name}; pass a wider dtype")
    return arr.astype(dtype, copy=False)


def build_token_cache(encode_fn: Callable[[Tensor], Tensor], dataset: Dataset, path: str | os.PathLike,
                      batch_size: int = 64, *, tokenizer_hash: str, dtype: Any = None, progress: bool = False,
                      overwrite: bool = False, num_workers: int = 0, text_encoder: Any = None) -> Path:
    """Encode every `(image, label)` of `dataset` with `encode_fn` (images (B,3,H,W) -> tokens (B,...)).

    dtype defaults to int32 for integer tokens and float32 for continuous ones. With `text_encoder` (an
    `argen.conditioning.TextEncoder`) the dataset's captions are encoded once too. An existing cache
    built for the same tokenizer/dataset/split/resolution (and text encoder) is reused as is; a different
    one is refused unless `overwrite=True`. Returns `path`.
    """
    path = Path(path)
    expect = _expected(dataset, tokenizer_hash, text_encoder)
    captions = getattr(dataset, "captions", None)
    if text_encoder is not None and not captions:
        problems = getattr(dataset, "caption_problems", None) or []
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise DataError(f"{expect['dataset']}: {len(problems)} caption problem(s): {'; '.join(problems[:5])}{more}. "
                            "Every image needs a non-empty caption for text conditioning")
        raise DataError(f"{expect['dataset']} has no captions to condition on: give a captioned dataset (emoji, or "
                        "an image folder with captions.jsonl / name.txt sidecars)")
    if path.exists():
        meta = read_meta(path)  # refuses to touch a folder that is not a token cache, even with overwrite
        if not overwrite:
            check_meta(meta, expect, path)
            return path
    n = len(dataset)
    if n == 0:
        raise DataError("cannot build a token cache from an empty dataset")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"tokenizing {expect['dataset']}", unit="img")
        tokens_mm = None
        labels = np.empty(n, dtype=np.int64)
        pos, abs_max = 0, 0.0
        with torch.inference_mode():
            for images, batch_labels in loader:
                arr = _as_numpy(encode_fn(images), None if dtype is None else np.dtype(dtype), len(images))
                if tokens_mm is None:
                    store = np.dtype(dtype) if dtype is not None else \
                        np.dtype(np.int32 if np.issubdtype(arr.dtype, np.integer) else np.float32)
                    tokens_mm = np.lib.format.open_memmap(staging / TOKENS, mode="w+", dtype=store,
                                                          shape=(n, *arr.shape[1:]))
                if arr.shape[1:] != tokens_mm.shape[1:]:
                    raise ValueError(f"encode_fn returned tokens of shape {arr.shape[1:]} after {tokens_mm.shape[1:]}; "
                                     "every image must give the same token shape")
                tokens_mm[pos:pos + len(arr)] = arr
                if np.issubdtype(tokens_mm.dtype, np.floating):
                    abs_max = max(abs_max, float(np.abs(tokens_mm[pos:pos + len(arr)]).max(initial=0.0)))
                labels[pos:pos + len(arr)] = np.asarray(batch_labels, dtype=np.int64)
                pos += len(arr)
                if bar is not None:
                    bar.update(len(arr))
        if bar is not None:
            bar.close()
        tokens_mm.flush()
        shape, store = tokens_mm.shape, tokens_mm.dtype
        del tokens_mm
        np.save(staging / LABELS, labels)
        if captions is not None:
            (staging / CAPTIONS).write_text(json.dumps(list(captions)))
        if text_encoder is not None:
            _write_text_features(text_encoder, list(captions), staging, batch_size, progress)
        meta = {"format": FORMAT, "version": VERSION, **expect, "token_shape": list(shape[1:]),
                "dtype": store.name, "classes": list(getattr(dataset, "classes", []) or [])}
        if np.issubdtype(store, np.floating):  # continuous tokens: their range bounds a diffusion head's x0
            meta["abs_max"] = abs_max
        (staging / META).write_text(json.dumps(meta, indent=2) + "\n")
        # Swap in the finished directory; an old cache (overwrite=True) is moved aside first.
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "cache")
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


class TokenCacheDataset(Dataset):
    """Read a token cache: `ds[i]` is `(tokens, cond)` where `cond` holds the sample's conditioning fields by
    their `argen.types.Cond` name (`{"labels": label}`, plus `"text"` (T, D) float32 and `"text_mask"` (T,)
    when the cache holds text features; the default collate stacks them into a batch the conditioner reads);
    integer tokens come back as int64.

    Keyword arguments that are not None must match the cache's metadata, else DataError.
    """

    def __init__(self, path: str | os.PathLike, *, tokenizer_hash: str | None = None, dataset: str | None = None,
                 split: str | None = None, resolution: int | None = None, text_encoder: Any = None):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        check_meta(self.meta, {"tokenizer_hash": tokenizer_hash, "dataset": dataset, "split": split,
                               "resolution": resolution, "text_encoder": _text_key(text_encoder)}, self.path)
        try:
            self.tokens = np.load(self.path / TOKENS, mmap_mode="r")
            self.labels = np.load(self.path / LABELS)
        except (OSError, ValueError) as e:
            raise DataError(f"token cache {self.path} is damaged ({e}); delete it and rebuild") from None
        n = self.meta["num_samples"]
        if self.tokens.shape != (n, *self.meta["token_shape"]) or len(self.labels) != n:
            raise DataError(f"token cache {self.path}: arrays {self.tokens.shape} / {self.labels.shape} do not match "
                            f"{META} ({n} samples of {self.meta['token_shape']}); delete it and rebuild")
        cap = self.path / CAPTIONS
        self.captions: list[str] | None = json.loads(cap.read_text()) if cap.is_file() else None
        self.text = self.text_mask = None
        if (self.path / TEXT).is_file():
            try:
                self.text = np.load(self.path / TEXT, mmap_mode="r")
                self.text_mask = np.load(self.path / TEXT_MASK)
            except (OSError, ValueError) as e:
                raise DataError(f"token cache {self.path}: text features are damaged ({e}); delete it and rebuild") from None
            if len(self.text) != n or len(self.text_mask) != n:
                raise DataError(f"token cache {self.path}: text features for {len(self.text)} samples, tokens for {n}; "
                                "delete it and rebuild")
        self.name = self.meta["dataset"]
        self.split = self.meta["split"]
        self.resolution = self.meta["resolution"]
        self.classes: list[str] = self.meta["classes"]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def abs_max(self) -> float | None:
        """The largest |value| of continuous tokens (None for integer ones): from the metadata, or one pass over
        the array for caches written before it was recorded."""
        if not np.issubdtype(self.tokens.dtype, np.floating):
            return None
        if "abs_max" not in self.meta:
            step = max(1, (64 << 20) // max(self.tokens[:1].nbytes, 1))
            self.meta["abs_max"] = max(float(np.abs(self.tokens[i:i + step]).max(initial=0.0))
                                       for i in range(0, len(self.tokens), step))
        return float(self.meta["abs_max"])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        t = torch.from_numpy(np.array(self.tokens[index]))
        if not t.is_floating_point():
            t = t.long()
        cond: dict[str, Any] = {"labels": int(self.labels[index])}
        if self.text is not None:
            cond["text"] = torch.from_numpy(np.array(self.text[index], dtype=np.float32))
            cond["text_mask"] = torch.from_numpy(np.array(self.text_mask[index]))
        return t, cond
