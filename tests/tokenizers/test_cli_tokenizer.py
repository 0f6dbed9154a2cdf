"""`argen tokenizer train` writes a loadable tokenizer and resumes; `--set` routing; task phases."""
import json

import pytest
import torch

import argen
from argen.cli import main
from argen.errors import ConfigError
from argen.tokenizers.task import TokenizerTask, TokenizerTaskConfig
from argen.train import StepContext
from argen.train.recipes import route_overrides


def test_overrides_route_by_prefix_the_same_way_for_every_command():
    items = ["quantizer.codebook_size=64", "train.lr=1e-3", "loss.disc_weight=0", "task.flip=true",
             "tokenizer.net.ch=8", "depth=3", "sampling.cfg=2"]
    tok = route_overrides(items, "tokenizer")
    assert tok["tokenizer"] == ["tokenizer.quantizer.codebook_size=64", "tokenizer.net.ch=8", "tokenizer.depth=3"]
    assert tok["train"] == ["lr=1e-3"] and tok["task"] == ["loss.disc_weight=0", "flip=true"]
    assert tok["sampling"] == ["sampling.cfg=2"]
    gen = route_overrides(items, "generator")  # the same rule; only unprefixed keys change their owner
    assert gen["generator"] == ["generator.quantizer.codebook_size=64", "generator.depth=3"]
    assert gen["tokenizer"] == ["tokenizer.net.ch=8"] and gen["train"] == tok["train"] and gen["task"] == tok["task"]
    with pytest.raises(ConfigError, match="key=value"):
        route_overrides(["depth"], "generator")


def test_task_phases_and_cached_discriminator_step():
    torch.manual_seed(0)
    tok = argen.create("vq-tiny")
    task = TokenizerTask(tok, TokenizerTaskConfig().override(["loss.disc_start=1", "loss.disc.ndf=8"]))
    assert list(task.phases()) == ["generator", "discriminator"]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ctx = lambda step, phase: StepContext(step, 4, phase, 0, torch.Generator().manual_seed(0))  # noqa: E731
    assert not task((x, None), ctx(0, "generator")).metrics.get("g_adv")
    early = task((x, None), ctx(0, "discriminator"))
    assert not early.loss.requires_grad  # before disc_start: the Trainer skips this phase's step
    task((x, None), ctx(1, "generator"))
    late = task((x, None), ctx(1, "discriminator"))
    assert late.loss.requires_grad and "d_loss" in late.metrics
    no_gan = TokenizerTask(argen.create("vq-tiny"), TokenizerTaskConfig().override(["loss.disc_weight=0"]))
    assert list(no_gan.phases()) == ["generator"]
    with pytest.raises(ValueError, match="no trainable parameters"):
        TokenizerTask(argen.create("pixel-tiny"))


@pytest.mark.slow
def test_cli_train_writes_loadable_tokenizer_and_resumes(tmp_path, capsys, fashion_mnist):
    out = tmp_path / "run"
    args = ["tokenizer", "train", "--preset", "vq-tiny", "--data", "fashion-mnist", "--batch-size", "4",
            "--out", str(out), "--threads", "1", "--set", "loss.disc.ndf=8", "--set", "train.log_every=1"]
    assert main(args + ["--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "perceptual loss: off" in printed and str(out / "tokenizer") in printed
    assert "greyscale" in printed  # Fashion-MNIST is grey: so are the tokenizer's decoded images
    tok = argen.load(out / "tokenizer")
    assert tok.layout.grid == (8, 8) and (out / "reconstructions.png").stat().st_size > 0
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert tok.encode(x).shape == (1, 64)
    assert tok.config.channels == 1
    y = tok.decode(tok.encode(x))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    assert main(args + ["--steps", "2"]) == 1  # refuses to overwrite a run without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--steps", "3", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    resumed = argen.load(out / "tokenizer")
    assert not torch.equal(resumed.encoder.conv_in.weight, tok.encoder.conv_in.weight)  # trained further
    assert main(args + ["--steps", "3", "--resume", "--set", "quantizer.codebook_size=128"]) == 1
    assert "differs" in capsys.readouterr().err
