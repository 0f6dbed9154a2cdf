import json

import numpy as np
import pytest
import torch
from PIL import Image

from argen.data import ImageFolder, load_dataset, scan_folder
from argen.errors import DataError
from argen.imageio import open_rgb, to_rgb


def test_class_folder_every_mode_and_format(class_folder):
    ds = load_dataset(class_folder, split="all", resolution=8)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert len(ds) == 8 and ds.skipped == []
    assert sorted(ds.labels.tolist()) == [0] * 4 + [1] * 4
    assert any("deeper" in str(p) for p in ds.paths)  # recursive
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 8, 8) and x.dtype == torch.float32
        assert -1.0 <= x.min() and x.max() <= 1.0
        assert y in (0, 1)
    assert ds.class_counts() == {"cat": 4, "dog": 4}
    assert ds.captions is None and ds.resolution == 8


@pytest.mark.parametrize("mode,color,expected", [
    ("L", (128, 128, 128), (128, 128, 128)),
    ("P", (51, 102, 153), (51, 102, 153)),  # a web-palette colour, so P conversion is exact
    ("RGBA", (10, 20, 30), (10, 20, 30)),
    ("LA", (128, 128, 128), (128, 128, 128)),
    ("I;16", (128, 0, 0), (128, 128, 128)),  # 16-bit is scaled (x/257), not clipped to 255
])
def test_modes_convert_to_expected_rgb(tmp_path, mode, color, expected, make_image):
    p = make_image(tmp_path / "x.png", color=color, size=(6, 4), mode=mode)
    arr = np.asarray(open_rgb(p))
    assert arr.shape == (4, 6, 3) and arr.dtype == np.uint8
    assert np.abs(arr[:, 1:].astype(int) - np.array(expected)).max() <= 1
    if mode in ("RGBA", "LA"):
        assert (arr[:, 0] == 255).all()  # transparent pixels composited on white


def test_palette_with_transparency_and_in_memory_modes(tmp_path):
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "t.png", transparency=0)
    arr = np.asarray(open_rgb(tmp_path / "t.png"))
    assert tuple(arr[0, 0]) == (255, 255, 255) and tuple(arr[1, 1]) == (10, 200, 30)
    # "I" (old PIL's 16-bit PNGs) and "PA" cannot be written as PNG; convert them in memory.
    i32 = Image.fromarray(np.full((2, 2), 65535, dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(i32)).min() == 255
    pa = Image.new("PA", (2, 2))
    assert np.asarray(to_rgb(pa)).shape == (2, 2, 3)


def test_flat_folder_is_unconditional(tmp_path, make_image):
    root = tmp_path / "flat"
    for i in range(3):
        make_image(root / f"{i}.png", color=(i * 50, 0, 0))
    make_image(root / "sub" / "x.jpg")
    ds = load_dataset(root, split="all")
    assert ds.classes == [] and ds.num_classes == 0 and not ds.conditional
    assert len(ds) == 4 and (ds.labels == -1).all()
    assert ds[0][1] == -1
    assert ds.resolution == 10  # median shorter side


def test_resize_center_crop_keeps_the_center(tmp_path):
    arr = np.zeros((10, 30, 3), dtype=np.uint8)
    arr[:, :10] = (255, 0, 0)
    arr[:, 10:20] = (0, 255, 0)
    arr[:, 20:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    ds = load_dataset(tmp_path, resolution=6)  # one image: nothing can be held out, train is all
    x, _ = ds[0]
    assert x.shape == (3, 6, 6)
    inner = x[:, :, 1:-1]  # bicubic rings a little at the crop edges
    assert inner[1].min() > 0.9 and inner[0].max() < -0.9  # only the green middle survives the crop
    big = load_dataset(tmp_path, resolution=3)  # exercises box-halving + bicubic
    assert big[0][0].shape == (3, 3, 3)
    up = load_dataset(tmp_path, resolution=40)
    assert up[0][0].shape == (3, 40, 40)


def _bad_folder(tmp_path, make_image, n_corrupt=1):
    root = tmp_path / "bad"
    make_image(root / "a" / "ok.png")
    make_image(root / "b" / "ok.jpg")
    (root / "a" / "empty.png").write_bytes(b"")
    for i in range(n_corrupt):
        (root / "b" / f"corrupt{i}.jpg").write_bytes(b"this is not a jpeg")
    good = (root / "a" / "ok.png").read_bytes()
    (root / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


def test_bad_files_skipped_with_paths(tmp_path, make_image):
    root = _bad_folder(tmp_path, make_image)
    ds = load_dataset(root, split="all", on_error="skip")
    assert len(ds) == 2
    reasons = dict(ds.skipped)
    assert len(reasons) == 3
    assert reasons[str(root / "a" / "empty.png")] == "empty file"
    assert str(root / "b" / "corrupt0.jpg") in reasons and str(root / "a" / "truncated.png") in reasons


def test_bad_files_raise_lists_paths(tmp_path, make_image):
    root = _bad_folder(tmp_path, make_image)
    with pytest.raises(DataError) as e:
        load_dataset(root, split="all", on_error="raise")
    msg = str(e.value)
    assert "3 unreadable" in msg and "empty.png (empty file)" in msg and "corrupt0.jpg" in msg
    assert "on_error='skip'" in msg


def test_many_bad_files_are_counted_not_all_listed(tmp_path, make_image):
    root = _bad_folder(tmp_path, make_image, n_corrupt=15)
    with pytest.raises(DataError) as e:
        load_dataset(root, split="all", on_error="raise")
    msg = str(e.value)
    assert "17 unreadable" in msg and "and 7 more" in msg
    # 10 listed: empty.png, truncated.png and the first 8 of the 15 corrupt files
    assert msg.count("/corrupt") == 8 and "empty.png" in msg and "truncated.png" in msg


def test_truncated_jpeg_needs_decode_check(tmp_path):
    root = tmp_path / "j"
    root.mkdir()
    ramp = np.linspace(0, 255, 256 * 256).reshape(256, 256).astype(np.uint8)
    Image.fromarray(np.stack([ramp, ramp.T, ramp], -1)).save(root / "ok.jpg", quality=90)
    data = (root / "ok.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) * 4 // 5])  # headers intact, scan data cut
    assert len(scan_folder(root, check="verify").paths) == 2  # header check cannot see it
    ds = ImageFolder(root, split="all", check="verify", on_error="raise")
    with pytest.raises(DataError, match="cut.jpg.*check='decode'"):
        [ds[i] for i in range(len(ds))]
    scan = scan_folder(root, check="decode")
    assert [p.name for p in scan.paths] == ["ok.jpg"] and "cut.jpg" in scan.skipped[0][0]


def test_empty_or_missing_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no image files"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match="no image files"):
        load_dataset(tmp_path)
    (tmp_path / "only.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 image files"):
        load_dataset(tmp_path)


def test_split_subfolders_share_label_ids(tmp_path, make_image):
    make_image(tmp_path / "train" / "a" / "1.png")
    make_image(tmp_path / "train" / "b" / "2.png")
    make_image(tmp_path / "train" / "c" / "3.png")
    make_image(tmp_path / "test" / "c" / "4.png")
    train, test = load_dataset(tmp_path, split="train"), load_dataset(tmp_path, split="test")
    assert train.classes == test.classes == ["a", "b", "c"]
    assert test.labels.tolist() == [2]
    with pytest.raises(DataError, match="cannot hold out a test split: every class has a single image"):
        load_dataset(tmp_path / "train", split="test")  # no test/ and nothing to hold out


def test_captions_from_sidecar_text_files(tmp_path, make_image):
    make_image(tmp_path / "x.png")
    make_image(tmp_path / "y.png")
    assert load_dataset(tmp_path, split="all").captions is None  # uncaptioned: no problem either
    assert load_dataset(tmp_path, split="all").caption_problems == []
    (tmp_path / "x.txt").write_text("a red square\n")
    ds = load_dataset(tmp_path, split="all")
    assert ds.captions is None  # only when every image has one; the missing one is named
    assert len(ds.caption_problems) == 1 and "y.txt: missing" in ds.caption_problems[0]
    (tmp_path / "y.txt").write_text("  ")
    assert "y.txt: empty caption" in load_dataset(tmp_path, split="all").caption_problems[0]
    (tmp_path / "y.txt").write_bytes(b"\xff\xfe bad")
    assert "not UTF-8" in load_dataset(tmp_path, split="all").caption_problems[0]
    (tmp_path / "y.txt").write_text("another")
    assert load_dataset(tmp_path, split="all").captions == ["a red square", "another"]


def test_captions_from_a_jsonl_file_by_relative_name(tmp_path, make_image):
    for name in ("a/x.png", "a/y.png", "b/z.png"):
        make_image(tmp_path / name)
    rows = [{"file": "b/z.png", "caption": "zed"}, {"file": "a/x.png", "caption": "ex"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(tmp_path, split="all")
    assert ds.captions is None and "no prompt for 1 of 3 images (e.g. a/y.png)" in ds.caption_problems[0]
    rows.append({"file_name": "a/y.png", "text": "why"})
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(tmp_path, split="all")
    assert dict(zip((p.relative_to(tmp_path).as_posix() for p in ds.paths), ds.captions)) == \
        {"a/x.png": "ex", "a/y.png": "why", "b/z.png": "zed"}
    (tmp_path / "captions.jsonl").write_text('{"file": "a/x.png", "caption": "ex"}\nnot json\n')
    assert ":2: not valid JSON" in load_dataset(tmp_path, split="all").caption_problems[0]


def test_a_text_cache_of_a_partly_captioned_folder_names_the_problem_files(tmp_path, make_image):
    from argen.data import build_token_cache

    make_image(tmp_path / "img" / "x.png")
    make_image(tmp_path / "img" / "y.png")
    (tmp_path / "img" / "x.txt").write_text("a red square")

    class Encoder:  # never reached: the captions are checked first
        name, max_length, dim = "fake", 4, 8

    ds = load_dataset(tmp_path / "img", split="all", resolution=32)
    with pytest.raises(DataError, match=r"1 caption problem\(s\): .*y\.txt: missing"):
        build_token_cache(lambda x: x, ds, tmp_path / "cache", tokenizer_hash="t", text_encoder=Encoder())


def test_uint8_images_match_getitem(class_folder):
    ds = load_dataset(class_folder, split="all", resolution=8)
    u = ds.uint8_images(3)
    assert u.shape == (3, 8, 8, 3) and u.dtype == torch.uint8
    x, _ = ds[1]
    assert torch.equal(((x + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0), u[1])


def test_bad_arguments_say_how_to_fix(class_folder):
    with pytest.raises(ValueError, match="on_error"):
        load_dataset(class_folder, on_error="ignore")
    with pytest.raises(ValueError, match="split"):
        load_dataset(class_folder, split="validation")
    with pytest.raises(ValueError, match="resolution"):
        load_dataset(class_folder, resolution=0)


def test_a_folder_of_greyscale_files_is_grey(tmp_path, make_image):
    make_image(tmp_path / "g" / "a.png", mode="L")
    make_image(tmp_path / "g" / "b.png", mode="I;16")
    assert load_dataset(tmp_path / "g", split="all").grey
    make_image(tmp_path / "g" / "c.png", mode="RGB")
    assert not load_dataset(tmp_path / "g", split="all").grey  # one colour file: colour data
