"""A training job for torchrun, used by test_train_torchrun.py: `torchrun ... torchrun_job.py OUT [--die]`
(its task, Noisy, also by test_train_distributed.py).

With --die, the first attempt (TORCHELASTIC_RESTART_COUNT=0) kills rank 1 with SIGKILL in the middle of
writing the step-4 checkpoint; torchrun --max-restarts then starts every rank again, and the job resumes from
the last complete checkpoint (resume=True)."""
import os
import signal
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from argen.train import FSDP, TrainConfig, Trainer
from argen.types import LossOutput


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 4))

    def forward(self, batch, ctx):
        x, y = batch
        x = x + 0.1 * torch.randn(x.shape, generator=ctx.rng)
        return LossOutput(F.cross_entropy(self.net(x), y))


def main(out: str, die: bool) -> None:
    torch.set_num_threads(1)
    rank, attempt = int(os.environ["RANK"]), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if die and attempt == 0 and rank == 1:
        from torch.distributed.checkpoint.filesystem import FileSystemWriter

        original = FileSystemWriter.write_data

        def killed(self, plan, planner):
            if "step-00000004" in str(self.path):
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception: the process is gone
            return original(self, plan, planner)

        FileSystemWriter.write_data = killed
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(40, 8, generator=g), torch.randint(0, 4, (40,), generator=g))
    torch.manual_seed(0)
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, log_every=1, ckpt_every=2, keep_checkpoints=0, ema_decay=0.5)
    trainer = Trainer(cfg, Noisy(), data, out, distributed=FSDP(), resume=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"attempts-rank{rank}.txt"), "a") as f:
        f.write(f"attempt {attempt} starts at step {trainer.step}\n")
    trainer.fit()
    state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in trainer.task.state_dict().items()}
    if rank == 0:
        torch.save(state, os.path.join(out, "final.pt"))
    trainer.dist.close()


if __name__ == "__main__":
    main(sys.argv[1], "--die" in sys.argv[2:])
