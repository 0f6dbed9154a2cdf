"""What a clumsy user hits through `argen tokenizer train` / `argen train` (issue 14): bad files in a folder,
a plain folder without a test split, a resumed run on other classes, zero or missing values."""
import io
import json

import numpy as np
import pytest
from PIL import Image

import argen
from argen.cli import main


def _folder(root, classes=("a", "b"), per=12, size=32, truncated=None):
    rs = np.random.RandomState(0)
    for c in classes or (None,):  # no classes: a flat folder
        for i in range(per):
            p = root / c / f"{i}.png" if c else root / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rs.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
    if truncated is not None:  # a JPEG whose header is fine and whose data stops half way
        buf = io.BytesIO()
        Image.fromarray(rs.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
        truncated.parent.mkdir(parents=True, exist_ok=True)
        truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return root


TOK = ["tokenizer", "train", "--preset", "vq-tiny", "--steps", "2", "--batch-size", "4", "--threads", "1",
       "--set", "loss.disc.ndf=8", "--no-progress"]


def test_plain_folder_with_a_truncated_jpeg_trains_to_the_end(tmp_path, capsys):
    data = _folder(tmp_path / "imgs", classes=(), per=40, truncated=tmp_path / "imgs" / "bad.jpg")
    assert main(TOK + ["--data", str(data), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "bad.jpg" in out  # the file that failed is named, and the run went on
    assert "held out" in out or "test" in out  # no test/ folder: the reconstructions use a held-out slice
    assert (tmp_path / "run" / "reconstructions.png").is_file() and (tmp_path / "run" / "tokenizer").is_dir()
    # the strict options fail on it with one line
    rc = main(TOK + ["--data", str(data), "--out", str(tmp_path / "strict"), "--check", "decode", "--on-error", "raise"])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.jpg" in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_data_with_other_classes(tmp_path, capsys):
    data = _folder(tmp_path / "cls", classes=("cat", "dog"))
    argen.save(argen.create("vq-tiny"), tmp_path / "tok")
    gen = ["train", "--preset", "fmnist-raster-tiny", "--tokenizer", str(tmp_path / "tok"), "--batch-size", "4",
           "--threads", "1", "--samples-per-class", "0", "--out", str(tmp_path / "run"), "--set", "generator.depth=1",
           "--no-progress"]
    assert main(gen + ["--data", str(data), "--steps", "2"]) == 0
    pipe = argen.load(tmp_path / "run" / "pipeline")
    assert pipe.conditioner.config.class_names == ("cat", "dog")  # the class-name -> id map travels with the model
    other = _folder(tmp_path / "cls2", classes=("cat", "cow"))
    assert main(gen + ["--data", str(other), "--steps", "4", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "cow" in err and "dog" in err


def test_zero_and_missing_values_are_refused_before_anything_loads(tmp_path, capsys):
    for flag in (["--steps", "0"], ["--batch-size", "0"], ["--lr", "0"], ["--resolution", "0"], ["--threads", "-1"],
                 ["--seed", "-1"]):
        with pytest.raises(SystemExit):
            main(TOK + ["--out", str(tmp_path / "x")] + flag)
        assert "must be" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("not a folder")
    assert main(TOK + ["--out", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(TOK + ["--out", str(tmp_path / "dev"), "--device", "tpu"]) == 1
    assert "cpu, cuda" in capsys.readouterr().err


def test_train_steps_override_brings_its_warm_up_along(tmp_path, fashion_mnist, capsys):
    argen.save(argen.create("vq-tiny"), tmp_path / "tok")
    rc = main(["train", "--preset", "fmnist-raster-tiny", "--tokenizer", str(tmp_path / "tok"), "--max-images", "32",
               "--batch-size", "8", "--threads", "1", "--samples-per-class", "0", "--out", str(tmp_path / "run"),
               "--set", "train.steps=20", "--set", "generator.depth=1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["train"]["steps"] == 20 and record["train"]["warmup_steps"] == 2
