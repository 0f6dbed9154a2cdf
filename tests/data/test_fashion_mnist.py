import gzip
import sys
import types

import numpy as np
import pytest
import torch

from argen.data import fashion_mnist, load_dataset
from argen.data.fashion_mnist import CLASSES, read_idx
from argen.errors import DataError


def test_counts_classes_and_range(fashion_root):
    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert len(load_dataset("fashion-mnist", split="all")) == 70000
    assert train.classes == CLASSES and train.num_classes == 10 and train.name == "fashion-mnist"
    assert set(train.class_counts().values()) == {6000} and set(test.class_counts().values()) == {1000}
    assert train.resolution == 28 and train.captions is None and train.grey
    x, y = train[0]
    assert x.shape == (3, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0  # black background, white pixels present
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey repeated into RGB
    assert y == 9  # the first training image is an ankle boot (label file's first byte)


def test_uint8_images_is_a_fast_slice_matching_getitem(fashion_root):
    ds = load_dataset("fashion-mnist", split="test")
    u = ds.uint8_images(5000)
    assert u.shape == (5000, 28, 28, 3) and u.dtype == torch.uint8
    for i in (0, 4999):
        assert torch.equal(u[i].permute(2, 0, 1).float() / 127.5 - 1, ds[i][0])


def test_pad_to_32_and_resize(fashion_root):
    padded = load_dataset("fashion-mnist", split="test", resolution=32)
    native = load_dataset("fashion-mnist", split="test")
    x = padded[3][0]
    assert x.shape == (3, 32, 32) and padded.fit == "pad"
    assert torch.equal(x[:, 2:30, 2:30], native[3][0])  # exact pixels in the middle
    assert (x[:, :2] == -1).all() and (x[:, :, -2:] == -1).all()  # black border
    assert torch.equal(padded.uint8_images(4)[3].permute(2, 0, 1).float() / 127.5 - 1, x)
    big = load_dataset("fashion-mnist", split="test", resolution=64)
    assert big.fit == "resize" and big[0][0].shape == (3, 64, 64) and big.uint8_images(3).shape == (3, 64, 64, 3)
    small = load_dataset("fashion-mnist", split="test", resolution=16)
    assert small[0][0].shape == (3, 16, 16) and -1 <= small[0][0].min() and small[0][0].max() <= 1
    with pytest.raises(ValueError, match="fit='resize'"):
        fashion_mnist.FashionMNIST(split="test", resolution=16, fit="pad")


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_root(tmp_path, n=5):
    rng = np.random.default_rng(0)
    for split, (img, lab) in fashion_mnist.FILES.items():
        _write_idx(tmp_path / f"{img}.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{lab}.gz", np.arange(n) % 10)
    return tmp_path


def test_given_root_with_idx_files(tmp_path):
    root = _fake_root(tmp_path)
    ds = load_dataset("fashion-mnist", root=root, split="all")
    assert len(ds) == 10 and ds.labels.tolist() == [0, 1, 2, 3, 4] * 2
    raw = read_idx(str(root / "t10k-images-idx3-ubyte.gz"))
    assert torch.equal(ds.uint8_images()[5, :, :, 0], torch.from_numpy(raw[0].copy()))


def test_truncated_idx_file_is_reported(tmp_path):
    root = _fake_root(tmp_path)
    path = root / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", root=root)
    with pytest.raises(DataError, match="IDX files not found"):
        load_dataset("fashion-mnist", root=tmp_path / "missing")


def test_offline_download_fails_with_clear_message(tmp_path, monkeypatch):
    """No local copy -> torchvision download; offline that must become one DataError, not a traceback."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_ROOT", tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "default_cache_dir", lambda: tmp_path / "cache")
    calls = []

    def offline(root, train, download):
        calls.append((root, train, download))
        raise OSError("[Errno -3] Temporary failure in name resolution")

    # A stand-in torchvision (importing the real one takes seconds here); only FashionMNIST is used.
    fake_tv, fake_datasets = types.ModuleType("torchvision"), types.ModuleType("torchvision.datasets")
    fake_datasets.FashionMNIST = offline
    fake_tv.datasets = fake_datasets
    monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_datasets)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    assert calls and calls[0][2] is True
    with pytest.raises(DataError, match="not found"):
        load_dataset("fashion-mnist", download=False)
