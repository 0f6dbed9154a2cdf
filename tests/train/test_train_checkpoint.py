import json

import pytest
import torch

from argen.errors import CheckpointError, ConfigError
from argen.train import TrainConfig, Trainer, find_latest, list_checkpoints, load_checkpoint
from argen.train import checkpoint as ckpt_mod

CFG = TrainConfig(steps=4, batch_size=4, lr=1e-2, log_every=1, ckpt_every=2, keep_checkpoints=0)


def _losses(out_dir):
    return [json.loads(line)["loss"] for line in (out_dir / "log.jsonl").read_text().splitlines()]


def _no_temp_files(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_checkpoint_contents_and_weights_only(toy_data, make_toy, tmp_path):
    tr = Trainer(CFG.replace(ema_decay=0.9), make_toy(), toy_data, tmp_path)
    tr.fit()
    ckdir = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(ckdir)] == ["step-00000002.pt", "step-00000004.pt"]
    assert find_latest(ckdir).name == "step-00000004.pt" and (ckdir / "latest").read_text().strip() == "step-00000004.pt"
    state = torch.load(find_latest(ckdir), weights_only=True)  # plain tensors/containers only
    assert state["step"] == 4 and state["config"]["lr"] == 1e-2
    assert state["data"] == {"epoch": 0, "index": 16, "num_samples": 40, "world_size": 1}
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
        with open(f, "wb") as fh:
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
