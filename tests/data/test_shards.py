"""Tar shards: images and token caches round-trip exactly, split across ranks without overlap, reshuffle per
epoch, stream per rank/worker disjointly, and refuse damaged or mismatched shards."""
import pickle
import tarfile

import numpy as np
import pytest
import torch

from argen.data import TokenCacheDataset, build_token_cache, load_dataset
from argen.data.base import ImageDataset
from argen.data.shards import (ImageShards, TokenShards, iter_shard_samples, load_shards, read_manifest,
                               shard_split, write_shards, write_token_shards)
from argen.errors import DataError
from argen.train import DataPosition, ResumableSampler


class Tiny(ImageDataset):
    def __init__(self, n=23, resolution=8, captions=True, split="train"):
        self.images = np.random.default_rng(n).integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)
        self.labels = np.arange(n, dtype=np.int64) % 3
        self.classes = ["a", "b", "c"]
        self.captions = [f"image {i}" for i in range(n)] if captions else None
        self.name, self.split, self.resolution, self.skipped = "tiny", split, resolution, []

    def load_uint8(self, index):
        return self.images[index]


def test_image_shards_round_trip_and_load_like_a_dataset(tmp_path):
    src = Tiny()
    out = write_shards(src, tmp_path / "sh", samples_per_shard=5)
    write_shards(Tiny(n=7, split="test"), out, samples_per_shard=5)  # a second split joins the same directory
    meta = read_manifest(out)
    assert [s["count"] for s in meta["splits"]["train"]["shards"]] == [5, 5, 5, 5, 3]
    assert sorted(p.name for p in out.glob("train-*.tar")) == [f"train-00000{i}.tar" for i in range(5)]
    ds = load_dataset(out, split="train")  # a shard directory loads like a folder
    assert isinstance(ds, ImageShards) and len(ds) == 23 and ds.classes == ["a", "b", "c"]
    assert np.array_equal(ds.labels, src.labels) and ds.captions == src.captions
    assert torch.equal(ds.uint8_images(), torch.from_numpy(src.images))  # PNG is lossless
    x, y = ds[4]
    assert x.shape == (3, 8, 8) and y == 1 and -1 <= x.min() and x.max() <= 1
    assert len(load_dataset(out, split="test")) == 7
    assert load_dataset(out, split="train", resolution=4)[0][0].shape == (3, 4, 4)
    again = pickle.loads(pickle.dumps(ds))  # DataLoader workers get a copy without open file handles
    assert torch.equal(again[22][0], ds[22][0])
    with tarfile.open(out / "train-000001.tar") as tar:  # plain tar, webdataset's <key>.<ext> members
        assert tar.getnames()[:3] == ["000000005.png", "000000005.cls", "000000005.txt"]


def test_shards_without_an_index_are_scanned(tmp_path):
    out = write_shards(Tiny(captions=False), tmp_path / "sh", samples_per_shard=10)
    for idx in out.glob("*.idx.npy"):
        idx.unlink()
    ds = load_dataset(out)
    assert torch.equal(ds.uint8_images(), torch.from_numpy(Tiny().images)) and ds.labels.tolist()[:4] == [0, 1, 2, 0]


def test_damaged_or_missing_shards_are_refused(tmp_path):
    out = write_shards(Tiny(), tmp_path / "sh", samples_per_shard=10)
    (out / "train-000001.tar").unlink()
    with pytest.raises(DataError, match="missing"):
        load_dataset(out)
    with pytest.raises(DataError, match="no split 'test'"):
        ImageShards(tmp_path / "sh", split="test")
    with pytest.raises(DataError, match="other data"):
        write_shards(Tiny(resolution=4), out)


def test_ranks_read_disjoint_samples_reshuffled_every_epoch(tmp_path):
    ds = load_dataset(write_shards(Tiny(captions=False), tmp_path / "sh", samples_per_shard=4))
    epochs = []
    for epoch in range(2):
        start = DataPosition(epoch, 0)
        parts = [list(iter_n(ResumableSampler(len(ds), seed=3, rank=r, world_size=2, chunk=3, start=start), 9))
                 for r in range(2)]
        assert not set(parts[0]) & set(parts[1])  # 18 of 23 samples, no overlap between the ranks
        epochs.append(parts)
    assert epochs[0] != epochs[1]


def iter_n(it, n):
    for i, x in zip(range(n), it):
        yield x


def test_streaming_shard_split_is_disjoint_and_complete(tmp_path):
    assert sorted(sum((shard_split(10, rank=r, world_size=2, worker=w, num_workers=2, epoch=1) for r in range(2)
                       for w in range(2)), [])) == list(range(10))
    assert shard_split(10, world_size=2, epoch=0) != shard_split(10, world_size=2, epoch=1)
    out = write_shards(Tiny(captions=False), tmp_path / "sh", samples_per_shard=3)  # 8 shards
    keys = [s["__key__"] for r in range(2) for w in range(2)
            for s in iter_shard_samples(out, rank=r, world_size=2, worker=w, num_workers=2, epoch=5, buffer=4)]
    assert sorted(keys) == [f"{i:09d}" for i in range(23)]
    first = [s["__key__"] for s in iter_shard_samples(out, rank=0, world_size=2, epoch=5, buffer=4)]
    assert first != [s["__key__"] for s in iter_shard_samples(out, rank=0, world_size=2, epoch=6, buffer=4)]


def _encode(images):  # (B, 3, H, W) in [-1, 1] -> (B, 4) integer tokens
    return ((images.mean(1).flatten(1)[:, :4] + 1) * 3).round().long()


def _latents(images):  # continuous tokens, MAR-style cached latents (B, 2, 2)
    return images.mean(1)[:, :2, :2]


@pytest.mark.parametrize("encode", [_encode, _latents])
def test_token_shards_equal_the_token_cache(tmp_path, encode):
    cache = build_token_cache(encode, Tiny(), tmp_path / "tokens", batch_size=8, tokenizer_hash="abc")
    ref = TokenCacheDataset(cache)
    out = write_token_shards(cache, tmp_path / "tok-shards", samples_per_shard=6)
    ds = load_shards(out, tokenizer_hash="abc")
    assert isinstance(ds, TokenShards) and len(ds) == len(ref) and ds.classes == ref.classes
    assert ds.captions == ref.captions
    for i in (0, 7, 22):
        (a, ca), (b, cb) = ds[i], ref[i]
        assert a.dtype == b.dtype and torch.equal(a, b) and ca == cb
    assert ds.abs_max == ref.abs_max and (ref.abs_max is None) == (encode is _encode)  # the latents' range
    with pytest.raises(DataError, match="built for something else"):
        TokenShards(out, tokenizer_hash="other")
