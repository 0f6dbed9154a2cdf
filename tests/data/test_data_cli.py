import numpy as np
from PIL import Image

from argen.cli import main


def test_folder_summary_and_grid(class_folder, tmp_path, capsys):
    (class_folder / "dog" / "broken.png").write_bytes(b"")
    out = tmp_path / "grid.png"
    assert main(["data", str(class_folder), "--split", "all", "--resolution", "16", "--n", "4", "--grid", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images: 8" in text and "resolution: 16x16" in text and "classes: 2" in text
    assert "cat" in text and "skipped files: 1" in text and "broken.png: empty file" in text
    assert f"grid: {out} (4 images, one row per class)" in text
    assert Image.open(out).size[0] >= 2 * 64  # tiles enlarged to at least 64 px


def test_unconditional_default_grid_path(tmp_path, monkeypatch, capsys, make_image):
    for i in range(5):
        make_image(tmp_path / "imgs" / f"{i}.png", color=(40 * i, 0, 0), size=(64, 64))
    monkeypatch.chdir(tmp_path)
    assert main(["data", "imgs", "--n", "3"]) == 0
    text = capsys.readouterr().out
    assert "classes: none" in text and "grid: runs/data/imgs-train.png (3 images)" in text
    grid = np.asarray(Image.open(tmp_path / "runs" / "data" / "imgs-train.png"))
    assert grid.shape == (64 + 4, 3 * 66 + 2, 3)


def test_raise_on_bad_files_is_one_line(class_folder, capsys):
    (class_folder / "cat" / "bad.jpg").write_bytes(b"junk")
    assert main(["data", str(class_folder), "--on-error", "raise", "--n", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jpg" in err and "Traceback" not in err


def test_unknown_dataset(capsys):
    assert main(["data", "no-such-dataset"]) == 1
    assert "not one of fashion-mnist, emoji" in capsys.readouterr().err


def test_fashion_mnist_summary(fashion_root, tmp_path, capsys):
    out = tmp_path / "fm.png"
    assert main(["data", "fashion-mnist", "--split", "test", "--resolution", "32", "--n", "20", "--grid", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images: 10000" in text and "resolution: 32x32" in text and "Ankle boot" in text and "1000" in text
    assert out.is_file()
