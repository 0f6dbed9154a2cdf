"""The run lock under several processes: rank 0 alone holds it for the run; when another run holds it, every
rank fails with the same RunLockedError (none is left waiting in a collective)."""
import os
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from argen.errors import RunLockedError
from argen.train import DDP
from argen.train.lock import LOCK_NAME, RunLock, holds_run_lock


@holds_run_lock
def job(*, out, distributed, device="cpu"):
    holder = (Path(out) / LOCK_NAME).read_text()
    distributed.barrier()  # both ranks are inside, concurrently
    return holder


def _worker(rank, world, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        try:
            result = job(out=Path(out) / "run", distributed=DDP())
        except RunLockedError as e:
            result = f"locked: {e}"
        (Path(out) / f"rank{rank}.txt").write_text(f"{os.getpid()}\n{result}")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, name):
    mp.spawn(_worker, args=(2, str(tmp_path / f"store-{name}"), str(tmp_path)), nprocs=2, join=True)
    return [(tmp_path / f"rank{r}.txt").read_text().split("\n", 1) for r in range(2)]


def test_only_rank_0_locks_and_every_rank_sees_a_competitor(tmp_path):
    (pid0, holder0), (_, holder1) = _spawn(tmp_path, "free")
    assert holder0 == holder1 and holder0.startswith(f"pid {pid0} ")  # rank 0's lock, seen by both ranks
    with RunLock(tmp_path / "run"):  # another run holds the directory
        (_, r0), (_, r1) = _spawn(tmp_path, "held")
    assert r0.startswith("locked: ") and r0 == r1 and f"pid {os.getpid()}" in r0
