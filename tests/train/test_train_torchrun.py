"""torchrun end to end on CPU: a rank killed with SIGKILL in the middle of a checkpoint save; torchrun
--max-restarts starts the ranks again, they resume from the last complete checkpoint and finish with the
weights and losses of a run that was never interrupted."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

JOB = Path(__file__).with_name("torchrun_job.py")


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_kill_9_of_one_rank_mid_save_then_max_restarts_resumes_exactly(tmp_path):
    ref = torchrun(str(JOB), str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    crash = torchrun("--max-restarts", "1", str(JOB), str(tmp_path / "crash"), "--die")
    assert crash.returncode == 0, crash.stderr[-3000:]
    attempts = (tmp_path / "crash" / "attempts-rank0.txt").read_text().splitlines()
    assert attempts == ["attempt 0 starts at step 0", "attempt 1 starts at step 2"]  # step 4 never completed
    ckpts = sorted(p.name for p in (tmp_path / "crash" / "checkpoints").iterdir())
    assert ckpts == ["latest", "step-00000002", "step-00000004", "step-00000006"]  # the half-written one is gone
    a = torch.load(tmp_path / "ref" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "crash" / "final.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "crash") == _losses(tmp_path / "ref")
