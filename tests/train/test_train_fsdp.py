"""FSDP2 and DCP checkpoints on CPU with gloo: two spawned processes against one process.

* FSDP on 2 ranks (micro-batch 4, or 2 x 2 accumulated without sync) computes the same losses, weights and
  EMA as one process with the same global batch of 8;
* a DCP checkpoint resumes exactly on the same number of ranks (bitwise, with dropout and ctx.rng noise);
* checkpoints move between world sizes: FSDP 2 -> 1 process (DCP), 1 process -> FSDP 2 (.pt and DCP),
  DDP 2 -> 1 process (.pt), with the losses of an uninterrupted run;
* a rank failing mid-save leaves the previous checkpoint as `latest`, and the next start removes the debris.
"""
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from argen.train import DDP, FSDP, Distributed, TrainConfig, Trainer, find_latest
from argen.types import LossOutput


class Det(nn.Module):
    """No randomness at all: any number of processes must compute the same math."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4))

    def forward(self, batch, ctx):
        x, y = batch
        return LossOutput(F.cross_entropy(self.net(x), y))


class Noisy(Det):
    """Dropout (global RNG) and augmentation noise (ctx.rng): exact resume needs every RNG state back."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.3)

    def forward(self, batch, ctx):
        x, y = batch
        x = x + 0.1 * torch.randn(x.shape, generator=ctx.rng)
        return LossOutput(F.cross_entropy(self.net(self.drop(x)), y))


def data():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(36, 8, generator=g), torch.randint(0, 4, (36,), generator=g))


def make(cls=Det, seed=0):
    torch.manual_seed(seed)
    return cls()


CFG = TrainConfig(steps=6, batch_size=8, lr=2e-2, log_every=1, ckpt_every=3, keep_checkpoints=0, ema_decay=0.5,
                  weight_decay=0.1, warmup_steps=2, schedule="cosine")


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def full_state(trainer) -> dict:
    """Full (unsharded) CPU weights and EMA of a trainer, on every rank."""
    from torch.distributed.tensor import DTensor

    def whole(t):
        return (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu().clone()

    return {"model": {k: whole(v) for k, v in trainer.task.state_dict().items()},
            "ema": {k: whole(v) for k, v in trainer.ema.shadow.items()} if trainer.ema else {}}


def _run(rank, world, store, out, scenario):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        SCENARIOS[scenario](rank, Path(out))
    finally:
        dist.destroy_process_group()


def spawn(tmp_path, scenario, world=2):
    store = tmp_path / f"store-{scenario}"
    mp.spawn(_run, args=(world, str(store), str(tmp_path), scenario), nprocs=world, join=True)


# ---------------------------------------------------------------------------------------------- scenarios

def _same_math(rank, out):
    cfg = CFG.replace(batch_size=4)
    tr = Trainer(cfg, make(), data(), out / "fsdp", distributed=FSDP())
    tr.fit()
    acc = Trainer(cfg.replace(batch_size=2, grad_accum=2), make(), data(), out / "fsdp-accum", distributed=FSDP())
    acc.fit()
    if rank == 0:
        torch.save({"fsdp": full_state(tr), "accum": full_state(acc)}, out / "same_math.pt")
    else:
        full_state(tr), full_state(acc)  # collective


def _exact_resume(rank, out):
    cfg = CFG.replace(batch_size=4)
    full = Trainer(cfg, make(Noisy), data(), out / "full", distributed=FSDP())
    full.fit()
    Trainer(cfg, make(Noisy), data(), out / "split", distributed=FSDP()).fit(stop_at=3)
    resumed = Trainer(cfg, make(Noisy, seed=5 + rank), data(), out / "split", distributed=FSDP(), resume=True)
    assert resumed.step == 3
    resumed.fit()
    a, b = full_state(full), full_state(resumed)
    if rank == 0:
        torch.save({"full": a, "resumed": b}, out / "exact.pt")


def _fsdp_writes(rank, out):
    Trainer(CFG.replace(batch_size=4), make(), data(), out / "from2", distributed=FSDP()).fit(stop_at=3)


def _ddp_writes(rank, out):
    Trainer(CFG.replace(batch_size=4), make(), data(), out / "from2ddp", distributed=DDP()).fit(stop_at=3)


def _fsdp_resumes(rank, out):
    for name in ("from1", "from1dcp"):
        tr = Trainer(CFG.replace(batch_size=4), make(seed=3), data(), out / name, distributed=FSDP(), resume=True)
        assert tr.step == 3, name
        tr.fit()
        state = full_state(tr)
        if rank == 0:
            torch.save(state, out / f"{name}.pt")


def _failing_save(rank, out):
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    cfg = CFG.replace(batch_size=4, steps=4, ckpt_every=2)
    tr = Trainer(cfg, make(), data(), out / "crash", distributed=FSDP())
    tr.fit(stop_at=2)
    original = FileSystemWriter.write_data

    def broken(self, plan, planner):  # rank 1's disk fails half-way through the save of step 4
        if rank == 1:
            raise OSError("simulated write failure on rank 1")
        return original(self, plan, planner)

    FileSystemWriter.write_data = broken
    try:
        tr.fit()
    except Exception as e:  # every rank learns that the save failed
        (out / f"crash-error-{rank}.txt").write_text(f"{type(e).__name__}: {e}")
    finally:
        FileSystemWriter.write_data = original


SCENARIOS = {"same_math": _same_math, "exact_resume": _exact_resume, "fsdp_writes": _fsdp_writes,
             "ddp_writes": _ddp_writes, "fsdp_resumes": _fsdp_resumes, "failing_save": _failing_save}


# ---------------------------------------------------------------------------------------------- tests

def _close(a: dict, b: dict, tol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=tol, rtol=tol, msg=k)


def _single(tmp_path, name, cfg=CFG, cls=Det, **kw):
    tr = Trainer(cfg, make(cls), data(), tmp_path / name, **kw)
    tr.fit()
    return tr


@pytest.mark.usefixtures("one_thread")
def test_fsdp_two_ranks_compute_what_one_process_computes(tmp_path):
    spawn(tmp_path, "same_math")
    one = _single(tmp_path, "one")
    got = torch.load(tmp_path / "same_math.pt", weights_only=True)
    ref = full_state(one)
    for name in ("fsdp", "accum"):
        _close(got[name]["model"], ref["model"])
        _close(got[name]["ema"], ref["ema"])  # the EMA is kept on the shards
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "one"), abs=1e-6)
    assert losses(tmp_path / "fsdp-accum") == pytest.approx(losses(tmp_path / "one"), abs=1e-6)
    ckpt = find_latest(tmp_path / "fsdp" / "checkpoints")
    assert ckpt.is_dir() and (ckpt / ".metadata").is_file() and (ckpt / "trainer.pt").is_file()
    assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one per rank


@pytest.mark.usefixtures("one_thread")
def test_fsdp_dcp_resume_on_the_same_world_size_is_exact(tmp_path):
    spawn(tmp_path, "exact_resume")
    got = torch.load(tmp_path / "exact.pt", weights_only=True)
    for part in ("model", "ema"):
        for k, v in got["full"][part].items():
            assert torch.equal(v, got["resumed"][part][k]), (part, k)
    assert losses(tmp_path / "full") == losses(tmp_path / "split")  # bitwise, with dropout and ctx.rng noise


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_checkpoints_move_between_world_sizes(tmp_path):
    one = _single(tmp_path, "one")  # the uninterrupted reference: global batch 8 in one process
    ref_losses, ref = losses(tmp_path / "one"), full_state(one)

    # FSDP on 2 ranks writes DCP at step 3 -> one process resumes it (global batch 8 = 8 x 1 x 1)
    spawn(tmp_path, "fsdp_writes")
    tr = Trainer(CFG, make(seed=9), data(), tmp_path / "from2", resume=True)
    assert tr.step == 3
    tr.fit()
    _close(full_state(tr)["model"], ref["model"])
    _close(full_state(tr)["ema"], ref["ema"])
    assert losses(tmp_path / "from2") == pytest.approx(ref_losses, abs=1e-5)

    # DDP on 2 ranks writes a .pt -> one process resumes it
    spawn(tmp_path, "ddp_writes")
    tr = Trainer(CFG, make(seed=9), data(), tmp_path / "from2ddp", resume=True)
    tr.fit()
    assert losses(tmp_path / "from2ddp") == pytest.approx(ref_losses, abs=1e-5)

    # one process writes a .pt (and, with checkpoint_format="dcp", a DCP directory) -> FSDP on 2 ranks resumes
    Trainer(CFG, make(), data(), tmp_path / "from1").fit(stop_at=3)
    Trainer(CFG, make(), data(), tmp_path / "from1dcp", distributed=Distributed(checkpoint_format="dcp")).fit(stop_at=3)
    assert find_latest(tmp_path / "from1" / "checkpoints").suffix == ".pt"
    assert find_latest(tmp_path / "from1dcp" / "checkpoints").is_dir()
    spawn(tmp_path, "fsdp_resumes")
    for name in ("from1", "from1dcp"):
        got = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        _close(got["model"], ref["model"])
        _close(got["ema"], ref["ema"])
        assert losses(tmp_path / name) == pytest.approx(ref_losses, abs=1e-5)


def test_resume_refuses_another_global_batch(tmp_path):
    from argen.errors import CheckpointError

    Trainer(CFG, make(), data(), tmp_path / "run").fit(stop_at=3)
    with pytest.raises(CheckpointError, match=r"global batch of 8 .*now 4.*train\.grad_accum=2"):
        Trainer(CFG.replace(batch_size=4), make(), data(), tmp_path / "run", resume=True)
    tr = Trainer(CFG.replace(batch_size=4, grad_accum=2), make(), data(), tmp_path / "run", resume=True)
    tr.fit()  # the same global batch in two micro-batches: the same run
    assert losses(tmp_path / "run") == pytest.approx(losses(_single(tmp_path, "one").out_dir), abs=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_a_rank_failing_mid_save_leaves_the_last_checkpoint(tmp_path):
    spawn(tmp_path, "failing_save")
    run = tmp_path / "crash"
    errors = [(tmp_path / f"crash-error-{r}.txt").read_text() for r in range(2)]
    assert all(errors), errors
    latest = find_latest(run / "checkpoints")
    assert latest.name == "step-00000002"  # step 4 never became a checkpoint
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    assert not (run / "checkpoints" / "step-00000004").exists()
    # one process continues from it; leftovers of the failed save (temp dirs of dead writers) are removed
    debris = run / "checkpoints" / ".step-00000004.999999-0123abcd.tmp"
    debris.mkdir()
    (debris / "__0_0.distcp").write_bytes(b"partial")
    tr = Trainer(CFG.replace(batch_size=8, steps=4, ckpt_every=2), make(), data(), run, resume=True)
    assert tr.step == 2 and not debris.exists()
    tr.fit()
    assert find_latest(run / "checkpoints").name == "step-00000004.pt"  # one process writes a file
