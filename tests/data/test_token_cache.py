import json

import numpy as np
import pytest
import torch
from torch import nn

from argen.data import TokenCacheDataset, build_token_cache, fingerprint
from argen.data.base import ImageDataset
from argen.errors import DataError


class TinyImages(ImageDataset):
    """Random uint8 images in memory, with labels and captions."""

    def __init__(self, n=10, resolution=8, name="tiny", split="train"):
        self.images = np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)
        self.labels = np.arange(n, dtype=np.int64) % 3
        self.classes, self.captions = ["a", "b", "c"], [f"image {i}" for i in range(n)]
        self.name, self.split, self.resolution, self.skipped = name, split, resolution, []

    def load_uint8(self, index):
        return self.images[index]


class Encoder:
    """Deterministic stand-in tokenizer: 4x4 average pool, quantised to 8 levels -> (B, 12) ids."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        pooled = torch.nn.functional.avg_pool2d(images, 4)  # (B, 3, 2, 2)
        return ((pooled + 1) * 3.5).round().long().flatten(1)  # (B, 12)


def test_round_trip(tmp_path):
    ds, enc = TinyImages(), Encoder()
    path = build_token_cache(enc, ds, tmp_path / "cache", batch_size=4, tokenizer_hash="h1")
    cached = TokenCacheDataset(path, tokenizer_hash="h1", dataset="tiny", split="train", resolution=8)
    assert len(cached) == 10 and cached.classes == ["a", "b", "c"] and cached.num_classes == 3
    assert cached.captions == ds.captions and cached.meta["dtype"] == "int32"
    for i in (0, 5, 9):
        tokens, cond = cached[i]
        assert tokens.dtype == torch.int64 and torch.equal(tokens, enc(ds[i][0][None])[0])
        assert cond == {"labels": ds[i][1]}  # conditioning fields by their Cond names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # staging directory cleaned up


def test_existing_cache_is_reused_or_refused(tmp_path):
    ds, enc = TinyImages(), Encoder()
    path = build_token_cache(enc, ds, tmp_path / "c", batch_size=5, tokenizer_hash="h1")
    calls = enc.calls
    build_token_cache(enc, ds, path, batch_size=5, tokenizer_hash="h1")
    assert enc.calls == calls  # same tokenizer + dataset: nothing recomputed
    with pytest.raises(DataError, match="tokenizer_hash: cache has 'h1', expected 'h2'.*overwrite=True"):
        build_token_cache(enc, ds, path, tokenizer_hash="h2")
    with pytest.raises(DataError, match="tokenizer_hash"):
        TokenCacheDataset(path, tokenizer_hash="h2")
    with pytest.raises(DataError, match="resolution: cache has 8, expected 16"):
        TokenCacheDataset(path, resolution=16)
    with pytest.raises(DataError, match="split"):
        TokenCacheDataset(path, split="test")
    build_token_cache(enc, ds, path, tokenizer_hash="h2", overwrite=True)
    assert TokenCacheDataset(path, tokenizer_hash="h2").meta["tokenizer_hash"] == "h2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_refuses_non_cache_and_damaged_cache(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a token cache"):
        build_token_cache(Encoder(), TinyImages(), tmp_path / "mine", tokenizer_hash="h", overwrite=True)
    assert (tmp_path / "mine" / "precious.txt").exists()
    path = build_token_cache(Encoder(), TinyImages(), tmp_path / "c", tokenizer_hash="h")
    meta = json.loads((path / "meta.json").read_text())
    meta["num_samples"] = 11
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="do not match"):
        TokenCacheDataset(path)


def test_failure_midway_leaves_nothing(tmp_path):
    enc = Encoder()

    def flaky(images):
        if enc.calls == 2:
            raise RuntimeError("tokenizer crashed")
        return enc(images)

    with pytest.raises(RuntimeError, match="crashed"):
        build_token_cache(flaky, TinyImages(), tmp_path / "c", batch_size=2, tokenizer_hash="h")
    assert list(tmp_path.iterdir()) == []


def test_dtypes(tmp_path):
    def continuous(images):
        return images.mean(dim=1).flatten(1)  # (B, H*W) floats

    path = build_token_cache(continuous, TinyImages(n=3), tmp_path / "f", tokenizer_hash="h")
    tokens, _ = TokenCacheDataset(path)[1]
    assert tokens.dtype == torch.float32 and tokens.shape == (64,)
    path = build_token_cache(Encoder(), TinyImages(n=3), tmp_path / "u8", tokenizer_hash="h", dtype=np.uint8)
    assert TokenCacheDataset(path).meta["dtype"] == "uint8" and TokenCacheDataset(path)[0][0].dtype == torch.int64
    with pytest.raises(ValueError, match="do not fit in uint8"):
        build_token_cache(lambda x: Encoder()(x) + 300, TinyImages(n=3), tmp_path / "bad", tokenizer_hash="h",
                          dtype=np.uint8)


def test_continuous_caches_record_their_largest_magnitude(tmp_path):
    """abs_max (what bounds a diffusion head's predicted token) is recorded for float tokens, computed from the
    array for a cache written before it was, and None for integer tokens."""
    def continuous(images):
        return images.mean(dim=1).flatten(1) * 3.0  # (B, 64) in [-3, 3]

    ds = TinyImages(n=9)
    path = build_token_cache(continuous, ds, tmp_path / "f", batch_size=4, tokenizer_hash="h")
    expected = max(float(continuous(ds[i][0][None]).abs().max()) for i in range(len(ds)))
    assert json.loads((path / "meta.json").read_text())["abs_max"] == pytest.approx(expected, rel=1e-6)
    assert TokenCacheDataset(path).abs_max == pytest.approx(expected, rel=1e-6)
    meta = json.loads((path / "meta.json").read_text())
    del meta["abs_max"]  # as an older argen wrote it
    (path / "meta.json").write_text(json.dumps(meta))
    assert TokenCacheDataset(path).abs_max == pytest.approx(expected, rel=1e-6)
    ints = build_token_cache(Encoder(), ds, tmp_path / "i", tokenizer_hash="h")
    assert "abs_max" not in json.loads((ints / "meta.json").read_text()) and TokenCacheDataset(ints).abs_max is None


def test_fingerprint_tracks_weights():
    a = nn.Linear(3, 2)
    h = fingerprint(a)
    assert h == fingerprint(a) and len(h) == 16
    with torch.no_grad():
        a.weight[0, 0] += 1
    assert fingerprint(a) != h
