import contextlib
import errno
import json
import multiprocessing
import os
import signal

import pytest
import torch

from argen.errors import CheckpointError, ConfigError, DiskFullError
from argen.saving import atomic_path
from argen.train import TrainConfig, Trainer, find_latest, list_checkpoints, load_checkpoint
from argen.train import checkpoint as ckpt_mod

CFG = TrainConfig(steps=4, batch_size=4, lr=1e-2, log_every=1, ckpt_every=2, keep_checkpoints=0)


def _losses(out_dir):
    return [json.loads(line)["loss"] for line in (out_dir / "log.jsonl").read_text().splitlines()]


def _no_temp_files(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _writable(f):
    """What a stand-in for torch.save writes to: the file object it is given, or the path opened."""
    return contextlib.nullcontext(f) if hasattr(f, "write") else open(f, "wb")


def test_checkpoint_contents_and_weights_only(toy_data, make_toy, tmp_path):
    tr = Trainer(CFG.replace(ema_decay=0.9), make_toy(), toy_data, tmp_path)
    tr.fit()
    ckdir = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(ckdir)] == ["step-00000002.pt", "step-00000004.pt"]
    assert find_latest(ckdir).name == "step-00000004.pt" and (ckdir / "latest").read_text().strip() == "step-00000004.pt"
    state = torch.load(find_latest(ckdir), weights_only=True)  # plain tensors/containers only
    assert state["step"] == 4 and state["config"]["lr"] == 1e-2
    assert state["data"] == {"epoch": 0, "index": 16, "num_samples": 40, "world_size": 1, "stream": "global"}
    assert set(state["rng"]["ranks"][0]) == {"loop", "torch", "cuda", "python", "numpy"}
    assert set(state["ema"]["shadow"]) == set(tr.task.state_dict())
    assert list(state["optimizers"]) == ["main"] and "scalers" in state and "schedulers" in state
    assert not _no_temp_files(tmp_path)


def test_keep_last_n(toy_data, make_toy, tmp_path):
    Trainer(CFG.replace(steps=6, ckpt_every=1, keep_checkpoints=2), make_toy(), toy_data, tmp_path).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000005.pt", "step-00000006.pt"]


def test_truncated_checkpoint_clear_error_and_previous_usable(toy_data, make_toy, tmp_path):
    Trainer(CFG, make_toy(), toy_data, tmp_path / "ref").fit()
    run = tmp_path / "run"
    Trainer(CFG, make_toy(), toy_data, run).fit()
    last = run / "checkpoints" / "step-00000004.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*step-00000002\.pt") as err:
        Trainer(CFG, make_toy(), toy_data, run, resume=True)
    assert "resume=" in str(err.value)
    previous = run / "checkpoints" / "step-00000002.pt"
    tr = Trainer(CFG, make_toy(seed=9), toy_data, run, resume=previous)
    assert tr.step == 2
    tr.fit()
    assert _losses(run) == _losses(tmp_path / "ref")  # log was cut back to step 2, then continued exactly
    load_checkpoint(last)  # rewritten, complete again


def test_crash_during_save_leaves_previous_checkpoint(toy_data, make_toy, tmp_path, monkeypatch):
    tr = Trainer(CFG, make_toy(), toy_data, tmp_path)
    tr.fit(stop_at=2)

    def broken_save(obj, f):
        with _writable(f) as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        tr.fit()
    monkeypatch.undo()
    ckdir = tmp_path / "checkpoints"
    assert not _no_temp_files(tmp_path)
    assert [p.name for p in list_checkpoints(ckdir)] == ["step-00000002.pt"]
    assert load_checkpoint(find_latest(ckdir))["step"] == 2


def test_a_full_disk_during_a_checkpoint_names_it_and_where_to_resume(toy_data, make_toy, tmp_path, monkeypatch):
    Trainer(CFG, make_toy(), toy_data, tmp_path / "ref").fit()
    run = tmp_path / "run"
    tr = Trainer(CFG, make_toy(), toy_data, run)
    tr.fit(stop_at=2)

    def full_save(obj, f):  # what torch.save raises when the file's write fails with ENOSPC
        try:
            with _writable(f) as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_save)
    with pytest.raises(DiskFullError) as e:
        tr.fit()
    monkeypatch.undo()
    ckdir = run / "checkpoints"
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"cannot write {ckdir / 'step-00000004.pt'}: the disk is full (")
    assert " free on that filesystem); nothing was replaced" in msg
    assert f"the run can resume from {ckdir / 'step-00000002.pt'}" in msg
    assert not _no_temp_files(run) and find_latest(ckdir).name == "step-00000002.pt"
    Trainer(CFG, make_toy(seed=9), toy_data, run, resume=True).fit()
    assert _losses(run) == _losses(tmp_path / "ref")


def _write_and_get_killed(path):
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 mid-write: no cleanup runs


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a writer to kill")
def test_resume_removes_the_temp_files_of_a_killed_write(toy_data, make_toy, tmp_path):
    Trainer(CFG, make_toy(), toy_data, tmp_path / "ref").fit()
    run = tmp_path / "run"
    Trainer(CFG, make_toy(), toy_data, run).fit(stop_at=2)
    ckdir = run / "checkpoints"
    for target in (ckdir / "step-00000004.pt", ckdir / "latest", run / "log.jsonl"):
        writer = multiprocessing.get_context("fork").Process(target=_write_and_get_killed, args=(target,))
        writer.start()
        writer.join()
        assert writer.exitcode == -signal.SIGKILL
    (ckdir / ".step-00000006.pt.a1b2c3d4.tmp").write_bytes(b"")  # earlier argen named its temps by mkstemp
    assert len(_no_temp_files(run)) == 4
    complete = {p.name: p.read_bytes() for p in ckdir.iterdir() if not p.name.endswith(".tmp")}
    assert sorted(complete) == ["latest", "step-00000002.pt"]
    tr = Trainer(CFG, make_toy(seed=9), toy_data, run, resume=True)
    assert not _no_temp_files(run)
    assert {p.name: p.read_bytes() for p in ckdir.iterdir()} == complete  # checkpoints and `latest` untouched
    assert tr.step == 2
    tr.fit()
    assert _losses(run) == _losses(tmp_path / "ref")


def test_rejects_foreign_or_mismatched_checkpoints(toy_data, make_toy, tmp_path):
    Trainer(CFG, make_toy(), toy_data, tmp_path).fit(stop_at=2)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.01, now 0\.02"):
        Trainer(CFG.replace(lr=2e-2), make_toy(), toy_data, tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="does not match"):
        Trainer(CFG, make_toy(hidden=8), toy_data, tmp_path, resume=True)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        Trainer(CFG, make_toy(), toy_data, tmp_path)
    Trainer(CFG.replace(steps=10, log_every=5), make_toy(), toy_data, tmp_path, resume=True)  # allowed changes
    evil = tmp_path / "evil.pt"
    torch.save({"format": "argen-train", "obj": ConfigError("x")}, evil)
    with pytest.raises(CheckpointError, match="not written by argen.train"):
        load_checkpoint(evil)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match="not an argen training checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
