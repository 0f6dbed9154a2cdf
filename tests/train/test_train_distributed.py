"""DDP on CPU with gloo: two spawned processes train, stop, resume and must match an uninterrupted run."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from argen.train import DDP, TrainConfig, Trainer
from torchrun_job import Noisy as _Task  # the same task the torchrun tests train


def _worker(rank, world, store, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(1)
        data = TensorDataset(torch.randn(40, 8, generator=g), torch.randint(0, 4, (40,), generator=g))
        cfg = TrainConfig(steps=4, batch_size=4, grad_accum=2, lr=1e-2, log_every=1, ckpt_every=2, ema_decay=0.5)

        def task(seed):
            torch.manual_seed(seed)
            return _Task()

        full = Trainer(cfg, task(0), data, f"{out}/full", distributed=DDP())
        full.fit()
        Trainer(cfg, task(0), data, f"{out}/split", distributed=DDP()).fit(stop_at=2)
        resumed = Trainer(cfg, task(rank + 7), data, f"{out}/split", distributed=DDP(), resume=True)
        resumed.fit()
        torch.save({"full": full.task.state_dict(), "resumed": resumed.task.state_dict(),
                    "ema": resumed.ema.shadow}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gloo_two_processes_resume_exactly(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for k in r0["full"]:
        assert torch.equal(r0["full"][k], r1["full"][k]), k  # gradients were all-reduced
        assert torch.equal(r0["full"][k], r0["resumed"][k]), k  # resume is exact under DDP too
    assert all(torch.equal(r0["ema"][k], r1["ema"][k]) for k in r0["ema"])
    logs = [[json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("full", "split")]
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]] and len(logs[0]) == 4
    state = torch.load(tmp_path / "split" / "checkpoints" / "step-00000004.pt", weights_only=True)
    assert state["data"]["world_size"] == 2 and len(state["rng"]["ranks"]) == 2
    assert not torch.equal(state["rng"]["ranks"][0]["torch"], state["rng"]["ranks"][1]["torch"])
