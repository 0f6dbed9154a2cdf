"""Reported faults of image folders: files that fail while training reads them, decompression bombs,
empty or unreadable class folders, and folders without a test split. Bad files are built here."""
import json
import os
import stat
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from argen.cli import main
from argen.data import check_classes, load_dataset, quarantine, scan_folder
from argen.data.splits import held_out_mask
from argen.errors import DataError
from argen.imageio import ImageReadError, open_rgb


def _ramp_jpeg(path, shift=0):
    """A 96 px JPEG with enough detail that cutting its scan data is noticed only by a full decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = (np.linspace(0, 255, 96 * 96).reshape(96, 96) + shift).astype(np.uint8)
    Image.fromarray(np.stack([ramp, ramp.T, 255 - ramp], -1)).save(path, quality=90)
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])  # headers intact, scan data cut


def _png_header(path, width, height):
    """A PNG whose IHDR claims width x height (8-bit grey) with one row of data: bytes on disk, a bomb in memory."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
                     + chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------------- 1. failures while reading

def _jpeg_folder(tmp_path, n=5, bad=(2,)):
    root = tmp_path / "jpegs"
    for i in range(n):
        _ramp_jpeg(root / f"{i}.jpg", shift=10 * i)
    for i in bad:
        _truncate(root / f"{i}.jpg")
    return root


def test_truncated_jpeg_is_replaced_while_reading_not_fatal(tmp_path):
    root = _jpeg_folder(tmp_path)
    calls = []
    ds = load_dataset(root, split="all", resolution=16, on_skip=lambda path, why: calls.append((path, why)))
    assert len(ds) == 5 and ds.skipped == []  # the default header scan cannot see it
    loader = DataLoader(ds, batch_size=2, shuffle=False)  # what a training run does: it must not stop
    assert sum(len(x) for x, _ in loader) == 5
    bad = str(root / "2.jpg")
    assert [p for p, _ in ds.skipped] == [bad] and "cannot decode" in ds.skipped[0][1]
    assert calls == ds.skipped  # reported once, however often it is read
    x2, x3 = ds[2][0], ds[3][0]
    assert torch.equal(x2, x3)  # replaced by the next readable image
    assert [p for p, _ in ds.skipped] == [bad]


def test_replacement_is_the_same_in_a_fresh_process_and_wraps_around(tmp_path):
    root = _jpeg_folder(tmp_path, bad=(2, 3, 4))
    first = load_dataset(root, split="all", resolution=16)
    order_a = [first[i][0] for i in (4, 2, 0, 3)]
    resumed = load_dataset(root, split="all", resolution=16)  # a resumed run knows nothing of earlier skips
    order_b = [resumed[i][0] for i in (3, 0, 2, 4)]
    assert torch.equal(order_a[0], first[0][0])  # the last file wraps around to index 0
    for i, a in zip((4, 2, 0, 3), order_a):
        assert torch.equal(a, resumed[i][0])
    assert torch.equal(order_b[0], first[3][0]) and torch.equal(order_b[2], first[2][0])


def test_read_failure_with_raise_is_one_line_naming_the_file(tmp_path):
    root = _jpeg_folder(tmp_path)
    ds = load_dataset(root, split="all", resolution=16, on_error="raise")
    ds[1]
    with pytest.raises(DataError) as e:
        ds[2]
    msg = str(e.value)
    assert "\n" not in msg and str(root / "2.jpg") in msg and "check='decode'" in msg and "on_error='skip'" in msg


def test_decode_check_leaves_it_out_and_quarantine_moves_it(tmp_path):
    root = _jpeg_folder(tmp_path)
    ds = load_dataset(root, split="all", check="decode")
    assert len(ds) == 4 and [p for p, _ in ds.skipped] == [str(root / "2.jpg")]
    dest = tmp_path / "bad-files"
    moved = quarantine(ds.skipped, dest, root=root)
    assert moved == [(root / "2.jpg", dest / "2.jpg")] and (dest / "2.jpg").is_file()
    record = json.loads((dest / "quarantine.jsonl").read_text().splitlines()[0])
    assert record["from"] == str(root / "2.jpg") and "cannot decode" in record["reason"]
    clean = load_dataset(root, split="all", check="decode")
    assert len(clean) == 4 and clean.skipped == []
    with pytest.raises(DataError, match="next scan would read"):
        quarantine([], root / "bad", root=root)
    assert quarantine([], root / ".quarantine", root=root) == []  # hidden folders are not scanned


def test_cli_data_quarantine(tmp_path, capsys):
    root = _jpeg_folder(tmp_path)
    dest = tmp_path / "q"
    assert main(["data", str(root), "--split", "all", "--check", "decode", "--quarantine", str(dest), "--n", "0"]) == 0
    out = capsys.readouterr().out
    assert "skipped files: 1" in out and f"quarantined: moved 1 file(s) to {dest}" in out
    assert not (root / "2.jpg").exists() and (dest / "2.jpg").is_file()


# ----------------------------------------------------------------------------- 2. decompression bombs

def test_bomb_header_is_skipped_not_a_traceback(tmp_path, make_image):
    root = tmp_path / "bombs"
    make_image(root / "ok.png")
    make_image(root / "ok2.png")
    _png_header(root / "huge.png", 30000, 30000)  # above PIL's own DecompressionBombError limit
    _png_header(root / "big.png", 12000, 12000)   # only a PIL warning: it used to be decoded (1.65 GB)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scan = scan_folder(root)
    assert not [w for w in caught if issubclass(w.category, (Image.DecompressionBombWarning, RuntimeWarning))]
    assert [p.name for p in scan.paths] == ["ok.png", "ok2.png"]
    reasons = {os.path.basename(p): why for p, why in scan.skipped}
    assert "decompression-bomb" in reasons["huge.png"]
    assert "12000x12000" in reasons["big.png"] and "max_pixels" in reasons["big.png"]
    with pytest.raises(DataError, match="2 unreadable.*big.png.*max_pixels"):
        load_dataset(root, split="all", on_error="raise")


def test_pixel_bound_is_checked_before_decoding_and_configurable(tmp_path, make_image):
    bomb = _png_header(tmp_path / "big.png", 12000, 12000)
    with pytest.raises(ImageReadError) as e:
        open_rgb(bomb)  # its pixel data is bogus: only a header check can give this reason
    assert e.value.path == str(bomb) and "max_pixels" in e.value.reason
    root = tmp_path / "photos"
    make_image(root / "a.png", size=(100, 80))
    make_image(root / "b.png", size=(20, 20))
    small = load_dataset(root, split="all", max_pixels=5000)
    assert [p.name for p in small.paths] == ["b.png"] and "100x80" in small.skipped[0][1]
    assert len(load_dataset(root, split="all")) == 2


def test_cli_data_reports_a_bomb(tmp_path, make_image, capsys):
    root = tmp_path / "bombs"
    make_image(root / "ok.png")
    _png_header(root / "huge.png", 30000, 30000)
    assert main(["data", str(root), "--split", "all", "--n", "0"]) == 0
    out = capsys.readouterr().out
    assert "skipped files: 1" in out and "huge.png: refused by PIL's decompression-bomb guard" in out
    assert main(["data", str(root), "--split", "all", "--n", "0", "--max-pixels", "10"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of the 2 image files" in err and "max_pixels=10" in err


# ----------------------------------------------------------------------------- 3. empty / unreadable class folders

def _three_classes(tmp_path, make_image):
    root = tmp_path / "three"
    for c, color in (("a", (255, 0, 0)), ("b", (0, 255, 0)), ("c", (0, 0, 255))):
        for i in range(2):
            make_image(root / c / f"{i}.png", color=color)
    return root


def test_empty_class_folder_keeps_ids_and_is_reported(tmp_path, make_image):
    root = _three_classes(tmp_path, make_image)
    for p in (root / "b").iterdir():
        p.unlink()
    (root / "b" / "readme.txt").write_text("no images here")
    ds = load_dataset(root, split="all")
    assert ds.classes == ["a", "b", "c"] and ds.class_counts() == {"a": 2, "b": 0, "c": 2}
    assert sorted(set(ds.labels.tolist())) == [0, 2]  # c keeps id 2
    assert len(ds.warnings) == 1 and str(root / "b") in ds.warnings[0] and "keeps id 1" in ds.warnings[0]
    with pytest.raises(DataError, match=r"folder problem.*three/b has no image files"):
        load_dataset(root, split="all", on_error="raise")


def test_unreadable_class_folder_chmod(tmp_path, make_image):
    root = _three_classes(tmp_path, make_image)
    os.chmod(root / "b", 0)
    try:
        if os.access(root / "b", os.R_OK):
            pytest.skip("running as a user who can read a chmod 000 folder (root)")
        ds = load_dataset(root, split="all")
        assert ds.classes == ["a", "b", "c"] and ds.labels.tolist() == [0, 0, 2, 2]
        assert "cannot be read" in ds.warnings[0]
        with pytest.raises(DataError, match="three/b cannot be read"):
            load_dataset(root, split="all", on_error="raise")
    finally:
        os.chmod(root / "b", stat.S_IRWXU)


def test_unreadable_folders_are_reported_even_as_root(tmp_path, make_image, monkeypatch, capsys):
    root = _three_classes(tmp_path, make_image)
    make_image(root / "c" / "deep" / "x.png", color=(0, 0, 255))
    blocked = {str(root / "b"), str(root / "c" / "deep")}
    real = os.scandir

    def scandir(path="."):
        if str(path) in blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ds = load_dataset(root, split="all")
    assert ds.classes == ["a", "b", "c"] and ds.labels.tolist() == [0, 0, 2, 2]
    assert sorted(f for f, _ in ds.unreadable_folders) == sorted(blocked)
    assert any("class 'b' keeps id 1" in w for w in ds.warnings)
    with pytest.raises(DataError, match="Permission denied"):
        load_dataset(root, split="all", on_error="raise")
    assert main(["data", str(root), "--split", "all", "--n", "0"]) == 0
    out = capsys.readouterr().out
    assert f"warning: folder {root / 'b'} cannot be read (Permission denied)" in out
    assert main(["data", str(root), "--split", "all", "--n", "0", "--on-error", "raise"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(root / "b") in err


def test_check_classes_lists_the_differences(tmp_path, make_image):
    ds = load_dataset(_three_classes(tmp_path, make_image), split="all")
    check_classes(ds, ["a", "b", "c"])
    check_classes(ds, ("a", "b", "c"))
    with pytest.raises(DataError) as e:
        check_classes(ds, ["a", "c", "d"], what="the saved pipeline")
    msg = str(e.value)
    assert "in the saved pipeline but not in the data: 'd'" in msg and "in the data but not in the saved pipeline: 'b'" in msg
    assert "'c' is id 1 in the saved pipeline, 2 in the data" in msg
    with pytest.raises(DataError, match="different ids"):
        check_classes(["b", "a"], ["a", "b"])


# ----------------------------------------------------------------------------- 4. folders without a test split

def _flat(tmp_path, make_image, n=40):
    root = tmp_path / "flat"
    for i in range(n):
        make_image(root / f"{i:03d}.png", color=(i * 6, 0, 0))
    return root


def test_flat_folder_holds_out_a_test_split(tmp_path, make_image):
    root = _flat(tmp_path, make_image)
    train, test, everything = (load_dataset(root, split=s) for s in ("train", "test", "all"))
    assert len(test) >= 1 and len(train) + len(test) == len(everything) == 40
    assert not set(train.paths) & set(test.paths)
    assert test.split_note and "held-out" in test.split_note and train.split_note and everything.split_note is None
    again = load_dataset(root, split="test")
    assert again.paths == test.paths  # deterministic
    other_seed = load_dataset(root, split="test", split_seed=1)
    assert other_seed.paths != test.paths
    make_image(root / "zzz-new.png")  # adding files never moves an existing file to the other side
    assert set(test.paths) <= set(load_dataset(root, split="test").paths) | {root / "zzz-new.png"}


def test_class_folder_holds_out_each_class(tmp_path, make_image):
    root = tmp_path / "cls"
    for c, color in (("cat", (200, 0, 0)), ("dog", (0, 200, 0))):
        for i in range(30):
            make_image(root / c / f"{i:02d}.png", color=color)
    train, test = load_dataset(root, split="train"), load_dataset(root, split="test")
    assert train.classes == test.classes == ["cat", "dog"]
    assert set(test.labels.tolist()) == {0, 1}  # about 5% of every class
    assert len(train) + len(test) == 60 and not set(train.paths) & set(test.paths)
    # root/train without root/test: the slice comes from root/train
    nested = tmp_path / "nested"
    nested.mkdir()
    root.rename(nested / "train")  # same relative paths, so the same held-out files
    t2 = load_dataset(nested, split="test")
    assert t2.root == nested / "train" and len(t2) == len(test) and "held-out" in t2.split_note
    assert len(load_dataset(nested, split="train")) == len(train)


def test_val_folder_serves_as_test_and_tiny_folders(tmp_path, make_image):
    make_image(tmp_path / "iv" / "train" / "a" / "1.png")
    make_image(tmp_path / "iv" / "val" / "a" / "2.png")
    test = load_dataset(tmp_path / "iv", split="test")
    assert test.root == tmp_path / "iv" / "val" and "val" in test.split_note
    make_image(tmp_path / "one" / "x.png")
    assert len(load_dataset(tmp_path / "one", split="train")) == 1  # nothing can be held out: train on it
    with pytest.raises(DataError, match="cannot hold out a test split"):
        load_dataset(tmp_path / "one", split="test")


def test_held_out_mask_is_per_file_and_never_empties_a_class():
    names = [f"{i}.png" for i in range(200)]
    labels = [i % 4 for i in range(200)]
    mask = held_out_mask(names, labels, 0.1, seed=0)
    assert 5 <= mask.sum() <= 40
    assert held_out_mask(names[:100], labels[:100], 0.1, seed=0).tolist() == mask[:100].tolist()
    tiny = held_out_mask(["a", "b"], [0, 0], 0.05)
    assert tiny.sum() == 1
    assert not held_out_mask(["a", "b", "c"], [0, 1, 1], 0.999)[0]  # class 0's only file stays in training


def test_cli_data_prints_the_split_note(tmp_path, make_image, capsys):
    root = _flat(tmp_path, make_image, n=10)
    assert main(["data", str(root), "--split", "test", "--n", "0"]) == 0
    out = capsys.readouterr().out
    assert "split: " in out and "held-out" in out and "images: " in out


def test_training_through_a_truncated_jpeg_resumes_exactly(tmp_path):
    """The reported run: a truncated JPEG under the default scan, read mid-run and again after --resume."""
    from torch import nn

    from argen.train import TrainConfig, Trainer
    from argen.types import LossOutput

    class Mean(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, batch, ctx):
            x, _ = batch
            return LossOutput(((x.mean((2, 3)) - self.w) ** 2).mean(), {})

    root = _jpeg_folder(tmp_path)
    cfg = TrainConfig(steps=6, batch_size=2, lr=0.1, log_every=1, ckpt_every=3, seed=0)

    def run(out, stop_at=None, resume=False):
        torch.manual_seed(0)
        ds = load_dataset(root, split="all", resolution=8)
        trainer = Trainer(cfg, Mean(), ds, out, resume=resume)
        trainer.fit(stop_at=stop_at)
        return trainer.task.w.detach().clone(), ds

    whole, ds = run(tmp_path / "whole")
    assert [p for p, _ in ds.skipped] == [str(root / "2.jpg")]  # 6 steps x 2 > 5 images: it was read
    run(tmp_path / "split", stop_at=3)
    resumed, _ = run(tmp_path / "split", resume=True)
    assert torch.equal(whole, resumed)
