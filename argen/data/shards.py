"""Tar shards: an image dataset or a token cache as plain POSIX tar files of a few thousand samples each —
few large files instead of millions of small ones, which is what cluster file systems and object stores
want, readable by any tar tool and by webdataset (the members follow its `<key>.<ext>` convention).

    write_shards(dataset, "shards/fmnist", split="train")       # images: <key>.png + <key>.cls [+ <key>.txt]
    write_token_shards("runs/ar/tokens", "shards/fmnist-tok")   # tokens: <key>.tokens.npy + <key>.cls [+ text]
    ds = load_shards("shards/fmnist", split="train")            # an ImageDataset (map-style)
    tokens = load_shards("shards/fmnist-tok")                   # a TokenCacheDataset look-alike

Layout of a shard directory:

    shards.json           format, kind ("images" | "tokens"), classes, resolution, and per split the shard
                          files with their sample counts (plus, for tokens, the token cache's metadata)
    train-000000.tar      the samples, in order, `samples_per_shard` per file
    train-000000.idx.npy  (count, 1 + 2 x members) int64: each sample's label, then the byte offset and size
                          of each member (-1 if absent), so opening a split reads no tar at all (shards
                          written by another tool have no index: their tar headers are scanned once)

Why a map-style reader over tarfile, not webdataset's streaming pipeline: the Trainer's exact resume needs
random access by index (its `ResumableSampler` reshuffles every epoch, hands every rank a disjoint part of
every global batch, and restores the position on any number of ranks, sampler.py); a streaming
`IterableDataset` cannot resume mid-epoch or re-split across another world size. A tar member is a byte
range of the file, so with the index a sample is one `seek` + `read` — the same idea as webdataset's own
indexed reader (wids) — in about a hundred lines of the standard library, with no extra dependency.

For readers that stream whole shards instead (sequential reads only), `shard_split` deals the shards of an
epoch to ranks and DataLoader workers without overlap, reshuffled per epoch, and `iter_shard_samples` yields
one rank's samples. Files are written atomically (temp name + rename); `shards.json` is written last, so a
directory without it is incomplete.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import DataError
from .base import ImageDataset, read_format_file

FORMAT = "argen-shards"
VERSION = 1
MANIFEST = "shards.json"
DEFAULT_SAMPLES_PER_SHARD = 5000


def is_shard_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    return read_format_file(Path(path) / MANIFEST, fmt=FORMAT, version=VERSION, what="shard directory",
                            missing="write one with write_shards or `argen data NAME --write-shards DIR`",
                            rebuild="rewrite the shards")


# ----------------------------------------------------------------------------- writing

class _ShardWriter:
    """Append samples (member extension -> bytes) to `<split>-NNNNNN.tar` files of `per_shard` samples, with
    an index of every member's byte range (see the module docstring)."""

    def __init__(self, out: Path, split: str, per_shard: int, members: Sequence[str]):
        if per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {per_shard}")
        self.out, self.split, self.per_shard, self.exts = out, split, per_shard, list(members)
        self.shards: list[dict[str, Any]] = []
        self._tar = self._tmp = None
        self._index: list[list[int]] = []
        self.total = 0

    def _open(self) -> None:
        self._name = f"{self.split}-{len(self.shards):06d}.tar"
        self._tmp = self.out / f".{self._name}.{os.getpid()}.tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._index = []

    def add(self, key: str, label: int, members: dict[str, bytes]) -> None:
        if self._tar is None:
            self._open()
        row = [int(label)] + [-1, -1] * len(self.exts)
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            k = self.exts.index(ext)
            row[1 + 2 * k:3 + 2 * k] = [self._tar.offset + tarfile.BLOCKSIZE, len(data)]  # data follows the header
            self._tar.addfile(info, io.BytesIO(data))
        self._index.append(row)
        self.total += 1
        if len(self._index) == self.per_shard:
            self._close()

    def _close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        os.replace(self._tmp, self.out / self._name)
        idx = self.out / self._name.replace(".tar", ".idx.npy")
        tmp = idx.with_name(f".{idx.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(self._index, dtype=np.int64).reshape(-1, 1 + 2 * len(self.exts)))
        os.replace(tmp, idx)
        self.shards.append({"file": self._name, "count": len(self._index)})
        self._tar = None

    def finish(self) -> dict[str, Any]:
        self._close()
        return {"shards": self.shards, "num_samples": self.total, "members": self.exts}


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _write_manifest(out: Path, meta: dict[str, Any]) -> None:
    from ..saving import atomic_write_text

    atomic_write_text(out / MANIFEST, json.dumps(meta, indent=2) + "\n")


def write_shards(dataset: ImageDataset, out: str | os.PathLike, *, split: str | None = None,
                 samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD, progress: bool = False) -> Path:
    """Write an image dataset (`ds[i] = (image, label)`, e.g. `load_dataset(...)`) as PNG tar shards under
    `out` for `split` (default the dataset's); other splits already in `out` are kept. Returns `out`."""
    out = Path(out)
    split = split or dataset.split
    old = read_manifest(out) if is_shard_dir(out) else None
    if old is not None and (old["kind"] != "images" or old["resolution"] != dataset.resolution
                            or old["classes"] != list(dataset.classes)):
        raise DataError(f"{out} holds shards of other data (kind {old['kind']}, {old['resolution']} px, classes "
                        f"{old['classes'][:5]}); write to another directory")
    out.mkdir(parents=True, exist_ok=True)
    _remove_split(out, split)
    captions = getattr(dataset, "captions", None)
    writer = _ShardWriter(out, split, samples_per_shard, ["png", "cls"] + (["txt"] if captions is not None else []))
    items = range(len(dataset))
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc=f"sharding {dataset.name}:{split}", unit="img")
    for i in items:
        image, label = dataset.read(i)
        members = {"png": _png(np.asarray(image, dtype=np.uint8)), "cls": str(int(label)).encode()}
        if captions is not None:
            members["txt"] = str(captions[i]).encode()
        writer.add(f"{i:09d}", int(label), members)
    splits = dict(old["splits"]) if old is not None else {}
    splits[split] = writer.finish()
    _write_manifest(out, {"format": FORMAT, "version": VERSION, "kind": "images", "name": dataset.name,
                          "resolution": dataset.resolution, "classes": list(dataset.classes),
                          "captions": captions is not None, "splits": splits})
    return out


def write_token_shards(cache: str | os.PathLike, out: str | os.PathLike, *,
                       samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD, progress: bool = False) -> Path:
    """Write a token cache (`build_token_cache`; integer tokens or continuous latents, MAR-style) as tar
    shards: `<key>.tokens.npy`, `<key>.cls`, and `<key>.txt` / `<key>.text.npy` / `<key>.text_mask.npy`
    when the cache holds captions / text features. The cache's metadata goes into shards.json."""
    from .token_cache import TokenCacheDataset

    src = TokenCacheDataset(cache)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = src.split or "train"
    _remove_split(out, split)
    exts = ["tokens.npy", "cls"] + (["txt"] if src.captions is not None else []) \
        + (["text.npy", "text_mask.npy"] if src.text is not None else [])
    writer = _ShardWriter(out, split, samples_per_shard, exts)
    items = range(len(src))
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc=f"sharding {cache}", unit="seq")
    for i in items:
        members = {"tokens.npy": _npy(np.asarray(src.tokens[i])), "cls": str(int(src.labels[i])).encode()}
        if src.captions is not None:
            members["txt"] = str(src.captions[i]).encode()
        if src.text is not None:
            members["text.npy"] = _npy(np.asarray(src.text[i]))
            members["text_mask.npy"] = _npy(np.asarray(src.text_mask[i]))
        writer.add(f"{i:09d}", int(src.labels[i]), members)
    cache_meta = dict(src.meta) if src.abs_max is None else {**src.meta, "abs_max": src.abs_max}  # old caches lack it
    _write_manifest(out, {"format": FORMAT, "version": VERSION, "kind": "tokens", "name": src.name,
                          "resolution": src.resolution, "classes": list(src.classes),
                          "captions": src.captions is not None, "token_cache": cache_meta,
                          "splits": {split: writer.finish()}})
    return out


def _remove_split(out: Path, split: str) -> None:
    for p in out.glob(f"{split}-*"):
        if p.suffix in (".tar", ".npy"):
            p.unlink()


# ----------------------------------------------------------------------------- reading

class _Shards:
    """The samples of one split: which shard and where in it, read with seek + read (handles per process)."""

    def __init__(self, root: Path, meta: dict[str, Any], split: str):
        if split not in meta["splits"]:
            have = ", ".join(sorted(meta["splits"]))
            raise DataError(f"{root} has no split {split!r} (it has: {have}); write it with write_shards(..., "
                            f"split={split!r})")
        entry = meta["splits"][split]
        self.root, self.exts = root, list(entry.get("members", ()))
        self.files = [root / e["file"] for e in entry["shards"]]
        tables = []
        for path, e in zip(self.files, entry["shards"]):
            if not path.is_file():
                raise DataError(f"shard {path} is missing; rewrite the shards of {root}")
            idx = path.with_name(path.name.replace(".tar", ".idx.npy"))
            table = np.load(idx) if self.exts and idx.is_file() else self._scan_table(path)
            if len(table) != e["count"]:
                raise DataError(f"shard {path} holds {len(table)} samples, {MANIFEST} says {e['count']}; it is "
                                "truncated or was changed — rewrite the shards")
            tables.append(table)
        table = np.concatenate(tables) if tables else np.zeros((0, 1 + 2 * len(self.exts)), np.int64)
        self.shard_of = np.repeat(np.arange(len(self.files)), [len(t) for t in tables]).astype(np.int64)
        self.labels = table[:, 0].copy()
        self.ranges = table[:, 1:].reshape(len(table), len(self.exts), 2)  # (N, members, offset/size)
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def _scan_table(self, path: Path) -> np.ndarray:
        """The index of a tar without one: one pass over its headers (webdataset-style `<key>.<ext>` members)."""
        found: dict[str, dict[str, tuple[int, int]]] = {}
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if m.isfile():
                    key, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                    found.setdefault(key, {})[ext] = (m.offset_data, m.size)
        for member in found.values():
            self.exts += [e for e in member if e not in self.exts]
        rows = []
        with open(path, "rb") as f:
            for key in sorted(found):
                row = [-1] + [-1, -1] * len(self.exts)
                for ext, (off, size) in found[key].items():
                    k = self.exts.index(ext)
                    row[1 + 2 * k:3 + 2 * k] = [off, size]
                if "cls" in found[key]:
                    f.seek(found[key]["cls"][0])
                    row[0] = int(f.read(found[key]["cls"][1]))
                rows.append(row)
        return np.asarray(rows, dtype=np.int64).reshape(-1, 1 + 2 * len(self.exts))

    def __len__(self) -> int:
        return len(self.labels)

    def has(self, ext: str) -> bool:
        return ext in self.exts

    def read(self, index: int, ext: str) -> bytes:
        if os.getpid() != self._pid:  # a DataLoader worker: its own file handles
            self._handles, self._pid = {}, os.getpid()
        s = int(self.shard_of[index])
        if ext not in self.exts or self.ranges[index, self.exts.index(ext), 0] < 0:
            raise DataError(f"sample {index} in {self.files[s]} has no .{ext} member")
        offset, size = (int(v) for v in self.ranges[index, self.exts.index(ext)])
        f = self._handles.get(s)
        if f is None:
            f = self._handles[s] = open(self.files[s], "rb")
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise DataError(f"{self.files[s]} is truncated at sample {index}; rewrite the shards")
        return data

    def texts(self, ext: str = "txt") -> list[str] | None:
        return [self.read(i, ext).decode() for i in range(len(self))] if self.has(ext) else None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}


class ImageShards(ImageDataset):
    """An ImageDataset over image shards (`write_shards`); `resolution` other than the stored one resizes."""

    def __init__(self, path: str | os.PathLike, split: str = "train", resolution: int | None = None):
        self.path = Path(path)
        meta = read_manifest(self.path)
        if meta["kind"] != "images":
            raise DataError(f"{self.path} holds {meta['kind']} shards, not images; read it with load_shards")
        self._shards = _Shards(self.path, meta, split)
        self.name, self.split = meta.get("name") or self.path.name, split
        self.stored_resolution = int(meta["resolution"])
        self.resolution = resolution or self.stored_resolution
        self.classes = list(meta["classes"])
        self.labels = self._shards.labels
        self.captions = self._shards.texts() if meta.get("captions") else None
        self.skipped = []

    def load_uint8(self, index: int) -> np.ndarray:
        from PIL import Image

        from ..imageio import pil_to_uint8, resize_center_crop

        img = Image.open(io.BytesIO(self._shards.read(index, "png")))
        if self.resolution != self.stored_resolution:
            img = resize_center_crop(img.convert("RGB"), self.resolution)
        return pil_to_uint8(img)


class TokenShards(Dataset):
    """Token shards (`write_token_shards`) with the item contract of `TokenCacheDataset`:
    `ds[i] = (tokens, {"labels": label[, "text": (T, D), "text_mask": (T,)]})`; the keyword arguments that
    are not None must match the cache's metadata."""

    def __init__(self, path: str | os.PathLike, *, tokenizer_hash: str | None = None, dataset: str | None = None,
                 split: str | None = None, resolution: int | None = None, text_encoder: Any = None):
        from .token_cache import _text_key, check_meta

        self.path = Path(path)
        meta = read_manifest(self.path)
        if meta["kind"] != "tokens":
            raise DataError(f"{self.path} holds {meta['kind']} shards, not tokens; read it with load_shards")
        self.meta = dict(meta["token_cache"])
        check_meta(self.meta, {"tokenizer_hash": tokenizer_hash, "dataset": dataset, "split": split,
                               "resolution": resolution, "text_encoder": _text_key(text_encoder)}, self.path)
        self.split = self.meta.get("split") or next(iter(meta["splits"]))
        self._shards = _Shards(self.path, meta, self.split)
        self.name, self.resolution = self.meta["dataset"], self.meta["resolution"]
        self.classes = list(meta["classes"])
        self.labels = self._shards.labels
        self.captions = self._shards.texts() if meta.get("captions") else None
        self.has_text = self._shards.has("text.npy")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def abs_max(self) -> float | None:
        """The continuous tokens' largest |value| as the source cache recorded it (None if it did not)."""
        v = self.meta.get("abs_max")
        return None if v is None else float(v)

    def __len__(self) -> int:
        return len(self._shards)

    def _array(self, index: int, ext: str) -> np.ndarray:
        return np.load(io.BytesIO(self._shards.read(index, ext)), allow_pickle=False)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        t = torch.from_numpy(self._array(index, "tokens.npy"))
        if not t.is_floating_point():
            t = t.long()
        cond: dict[str, Any] = {"labels": int(self.labels[index])}
        if self.has_text:
            cond["text"] = torch.from_numpy(self._array(index, "text.npy").astype(np.float32))
            cond["text_mask"] = torch.from_numpy(self._array(index, "text_mask.npy"))
        return t, cond


def load_shards(path: str | os.PathLike, split: str = "train", resolution: int | None = None, **checks: Any):
    """`ImageShards` or `TokenShards`, whichever the directory holds (`checks`: TokenShards' metadata checks)."""
    kind = read_manifest(path)["kind"]
    if kind == "images":
        return ImageShards(path, split=split, resolution=resolution)
    return TokenShards(path, **checks)


# ----------------------------------------------------------------------------- streaming readers

def shard_split(num_shards: int, *, rank: int = 0, world_size: int = 1, epoch: int = 0, seed: int = 0,
                worker: int = 0, num_workers: int = 1) -> list[int]:
    """The shards that DataLoader worker `worker` of `rank` reads in `epoch`: a seeded per-epoch permutation
    of all shards, dealt round-robin to the `world_size * num_workers` readers — disjoint, together all of
    them (a reader gets no shard when there are fewer shards than readers; use more, smaller shards)."""
    readers = world_size * num_workers
    if not (0 <= rank < world_size and 0 <= worker < num_workers):
        raise ValueError(f"rank {rank} / worker {worker} out of range ({world_size} ranks, {num_workers} workers)")
    order = torch.randperm(num_shards, generator=torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63))
    return order[rank * num_workers + worker::readers].tolist()


def iter_shard_samples(path: str | os.PathLike, split: str = "train", *, rank: int = 0, world_size: int = 1,
                       epoch: int = 0, seed: int = 0, worker: int = 0, num_workers: int = 1,
                       buffer: int = 1000) -> Iterator[dict[str, bytes]]:
    """Stream this reader's shards (`shard_split`) sequentially, shuffling samples within a buffer of `buffer`;
    yields {"__key__": key, ext: bytes, ...} per sample, like webdataset."""
    import random

    path = Path(path)
    shards = read_manifest(path)["splits"][split]["shards"]
    rng = random.Random(seed * 7919 + epoch * 104_729 + rank * 131 + worker)
    pool: list[dict[str, bytes]] = []
    for s in shard_split(len(shards), rank=rank, world_size=world_size, epoch=epoch, seed=seed, worker=worker,
                         num_workers=num_workers):
        with tarfile.open(path / shards[s]["file"], "r:") as tar:
            current: dict[str, bytes] = {}
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                if current and current["__key__"] != key:
                    pool.append(current)
                    current = {}
                current.setdefault("__key__", key)
                current[ext] = tar.extractfile(m).read()
                if len(pool) >= buffer:
                    yield pool.pop(rng.randrange(len(pool)))
            if current:
                pool.append(current)
    rng.shuffle(pool)
    yield from pool


__all__ = ["write_shards", "write_token_shards", "load_shards", "ImageShards", "TokenShards", "is_shard_dir",
           "read_manifest", "shard_split", "iter_shard_samples", "DEFAULT_SAMPLES_PER_SHARD"]
