"""Faults of the machine, not of the code: a full disk. Every artefact argen writes (models, checkpoints,
JSON, images, logs) fails with one line that names the file and the free space, replaces nothing and leaves
no temp file; the CLI prints such an error as that line."""
import contextlib
import errno
import json

import pytest
import torch
from safetensors import SafetensorError

import argen
from argen.errors import ArgenError, DiskFullError
from argen.imageio import save_image
from argen.saving import atomic_write_text, load, save

CODES = [errno.ENOSPC, errno.EDQUOT]


def _no_temps(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _check(err: DiskFullError, path, code):
    msg = str(err)
    assert isinstance(err, ArgenError) and isinstance(err, OSError) and err.errno == code
    assert "\n" not in msg and msg.startswith(f"cannot write {path}: ")
    assert ("the disk is full" if code == errno.ENOSPC else "the disk quota is used up") in msg
    assert " free on that filesystem" in msg and "nothing was replaced" in msg


def _full(code):
    def fail(*args, **kwargs):
        raise OSError(code, "No space left on device" if code == errno.ENOSPC else "Disk quota exceeded")
    return fail


@pytest.mark.parametrize("code", CODES)
def test_json_on_a_full_disk(monkeypatch, tmp_path, code):
    target = tmp_path / "run.json"
    target.write_text('{"old": true}\n')
    monkeypatch.setattr("os.replace", _full(code))  # the rename fails: the file was written, not renamed
    with pytest.raises(DiskFullError) as e:
        atomic_write_text(target, '{"new": true}\n')
    _check(e.value, target, code)
    assert json.loads(target.read_text()) == {"old": True} and not _no_temps(tmp_path)


@pytest.mark.parametrize("code", CODES)
def test_model_weights_on_a_full_disk(monkeypatch, tmp_path, code):
    torch.manual_seed(0)
    old = argen.create("vq-tiny")
    save(old, tmp_path / "m")
    import safetensors.torch

    def full_save_file(tensors, filename, metadata=None):  # how safetensors reports it: a Rust I/O error
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise SafetensorError(f"Error while serializing: I/O error: No space left on device (os error {code})")

    monkeypatch.setattr(safetensors.torch, "save_file", full_save_file)
    torch.manual_seed(1)
    with pytest.raises(DiskFullError) as e:
        save(argen.create("vq-tiny"), tmp_path / "m")
    _check(e.value, tmp_path / "m" / "model.safetensors", code)
    monkeypatch.undo()
    back = load(tmp_path / "m")  # the previous save, whole: weights and the config that matches them
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), old.state_dict().values()))
    assert not _no_temps(tmp_path)


def test_torch_save_on_a_full_disk(monkeypatch, tmp_path):
    from argen.saving import atomic_torch_save

    def full_torch_save(obj, f):  # torch's zip writer wraps the file's OSError in a RuntimeError
        try:
            with contextlib.nullcontext(f) if hasattr(f, "write") else open(f, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_torch_save)
    with pytest.raises(DiskFullError) as e:
        atomic_torch_save({"x": torch.zeros(3)}, tmp_path / "state.pt")
    _check(e.value, tmp_path / "state.pt", errno.ENOSPC)
    assert not (tmp_path / "state.pt").exists() and not _no_temps(tmp_path)


def test_images_on_a_full_disk(monkeypatch, tmp_path):
    from PIL import Image

    target = tmp_path / "samples.png"
    save_image(torch.zeros(3, 4, 4), target)
    before = target.read_bytes()

    def full_save(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_save)
    with pytest.raises(DiskFullError) as e:
        save_image(torch.ones(3, 4, 4), target)
    _check(e.value, target, errno.ENOSPC)
    assert target.read_bytes() == before and not _no_temps(tmp_path)


def test_other_write_errors_pass_through_unchanged(monkeypatch, tmp_path):
    monkeypatch.setattr("os.replace", _full(errno.EACCES))
    with pytest.raises(PermissionError):
        atomic_write_text(tmp_path / "a.json", "{}")
    assert not _no_temps(tmp_path)


def test_a_training_log_on_a_full_disk(tmp_path):
    from argen.train import Trainer

    class FullFile:
        name = str(tmp_path / "log.jsonl")

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as e:
        Trainer._append(FullFile(), {"step": 7, "loss": 1.0})
    assert str(e.value).startswith(f"cannot write {tmp_path / 'log.jsonl'}: the disk is full")
    assert "the line of step 7 is missing" in str(e.value) and "\n" not in str(e.value)


def test_the_cli_prints_a_full_disk_as_one_line(monkeypatch, tmp_path, capsys):
    from argen.cli import main

    argen.create("fmnist-raster-tiny").save(tmp_path / "pipe")
    monkeypatch.setattr("os.replace", _full(errno.ENOSPC))
    assert main(["sample", str(tmp_path / "pipe"), "--labels", "0", "--out", str(tmp_path / "samples")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argen sample: error: cannot write " in err and "the disk is full" in err
    assert not _no_temps(tmp_path)
