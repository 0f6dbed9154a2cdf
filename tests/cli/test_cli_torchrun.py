"""`torchrun ... -m argen` on CPU (gloo, 2 ranks): tokenizer training under DDP with the GAN phases,
generator training under FSDP with activation checkpointing, resumed in one process from the DCP
checkpoint; only rank 0 writes and reports; distributed sampling writes the images one process writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def argen(*args, ranks: int = 0, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), "-m"]
                if ranks else [sys.executable, "-m"])
    done = subprocess.run([*launcher, "argen", *args, "--threads", "1"], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_torchrun_train_resume_and_sample(tmp_path, fashion_mnist):
    vq, ar = tmp_path / "vq", tmp_path / "ar"
    tok = argen("tokenizer", "train", "--preset", "vq-tiny", "--steps", "4", "--batch-size", "4", "--out", str(vq),
                "--strategy", "ddp", "--no-progress", "--set", "loss.disc_start=2", ranks=2)
    assert tok.stdout.count("tokenizer saved to") == 1 and tok.stdout.count("step 4/4") == 1  # rank 0 only
    assert (vq / "tokenizer" / "config.json").is_file() and (vq / "reconstructions.png").is_file()
    log = [json.loads(line) for line in (vq / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "discriminator/loss" in log[-1]["metrics"]
    assert json.loads((vq / "run.json").read_text())["world_size"] == 2

    common = ["--preset", "fmnist-raster-tiny", "--tokenizer", str(vq), "--max-images", "32", "--out", str(ar),
              "--no-progress", "--samples-per-class", "1"]
    run = argen("train", *common, "--steps", "2", "--batch-size", "4", "--strategy", "fsdp",
                "--activation-checkpointing", ranks=2)
    assert run.stdout.count("pipeline saved to") == 1
    assert (ar / "checkpoints" / "step-00000002" / ".metadata").is_file()  # DCP, one shard file per rank
    assert len(list((ar / "checkpoints" / "step-00000002").glob("*.distcp"))) == 2
    resumed = argen("train", *common, "--steps", "4", "--resume")  # one process continues the 2-rank run
    assert "resuming a run of 2 process(es) on 1: batch_size 4 x grad_accum 2" in resumed.stdout
    steps = [json.loads(line)["step"] for line in (ar / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]

    one, two = tmp_path / "one", tmp_path / "two"
    argen("sample", str(ar), "--num-images", "5", "--batch-size", "2", "--seed", "7", "--out", str(one))
    out = argen("sample", str(ar), "--num-images", "5", "--batch-size", "2", "--seed", "7", "--out", str(two),
                ranks=2)
    assert out.stdout.count("5 images written") == 1
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir()) and len(files) == 6  # 5 PNGs + conditions.json
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
