import math

import pytest
import torch
from torch import nn

from argen.train import TrainConfig, Trainer, build_optimizer, decay_groups, lr_factor
from argen.train.optim import build_scheduler


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.pos = nn.Parameter(torch.zeros(1, 3, 4))
        self.conv = nn.Conv2d(4, 4, 3)
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.gain = nn.Parameter(torch.ones(()))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_decay_only_on_2d_and_up():
    m = _Mixed()
    groups = decay_groups(m.parameters(), 0.05, no_decay=[m.pos])
    names = {id(p): n for n, p in m.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    kept = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decayed == {"emb.weight", "conv.weight", "lin.weight"}
    assert kept == {"pos", "conv.bias", "lin.bias", "norm.weight", "norm.bias", "gain"}  # frozen ones dropped


def test_build_optimizer_overrides():
    m = _Mixed()
    opt = build_optimizer(m.parameters(), TrainConfig(lr=1e-3, weight_decay=0.1), lr=5e-4, betas=(0.5, 0.9))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4]
    assert opt.param_groups[0]["betas"] == (0.5, 0.9) and opt.param_groups[0]["weight_decay"] == 0.1
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(m.frozen.parameters(), TrainConfig())


def test_trainer_excludes_no_weight_decay_names(toy_data, make_toy, tmp_path):
    task = make_toy()
    task.no_weight_decay = lambda: ["net.0"]  # whole first Linear
    tr = Trainer(TrainConfig(steps=1), task, toy_data, tmp_path)
    (decay_group, keep_group) = tr.optimizers["main"].param_groups
    assert [p.shape for p in decay_group["params"]] == [torch.Size([4, 16])]
    assert any(p is task.net[0].weight for p in keep_group["params"])


@pytest.mark.parametrize("schedule, expected", [
    # warm-up 4 of 12 steps, min ratio 0.1: steps 0..3 ramp, 4 = start of decay, 8 = half way, 12 = end
    ("constant", {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 8: 1.0, 12: 1.0}),
    ("linear", {0: 0.25, 3: 1.0, 4: 1.0, 8: 0.55, 12: 0.1, 20: 0.1}),
    ("cosine", {0: 0.25, 3: 1.0, 4: 1.0, 6: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), 8: 0.55, 12: 0.1}),
])
def test_lr_factor_values(schedule, expected):
    for step, value in expected.items():
        got = lr_factor(step, warmup_steps=4, total_steps=12, schedule=schedule, min_lr_ratio=0.1)
        assert got == pytest.approx(value, abs=1e-12), (schedule, step)


def test_no_warmup_starts_at_peak_and_scheduler_follows_factor():
    cfg = TrainConfig(steps=10, lr=0.1, warmup_steps=0, schedule="cosine", min_lr_ratio=0.0)
    opt = build_optimizer(nn.Linear(2, 2).parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.1)
    assert seen == pytest.approx([0.1 * lr_factor(s, warmup_steps=0, total_steps=10, schedule="cosine") for s in range(10)])
    assert all(fn is None for fn in sched.state_dict()["lr_lambdas"])  # the closure is not checkpointed


def test_logged_lr_matches_schedule(toy_data, make_toy, tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, lr=0.01, warmup_steps=2, schedule="linear", min_lr_ratio=0.5, log_every=1)
    records = Trainer(cfg, make_toy(), toy_data, tmp_path).fit()
    want = [0.01 * lr_factor(s, warmup_steps=2, total_steps=6, schedule="linear", min_lr_ratio=0.5) for s in range(6)]
    assert [r["lr"] for r in records] == pytest.approx(want)


def test_grad_clip_caps_the_norm(toy_data, make_toy, tmp_path):
    cfg = TrainConfig(steps=1, batch_size=8, lr=1e-6, grad_clip=0.01, log_every=1)
    tr = Trainer(cfg, make_toy(), toy_data, tmp_path / "clip")
    (record,) = tr.fit()
    clipped = torch.nn.utils.get_total_norm([p.grad for p in tr.task.parameters()])
    assert record["grad_norm"] > 0.1  # logged norm is the one before clipping
    assert clipped.item() == pytest.approx(0.01, rel=1e-3)
    # without clipping the gradient keeps its full norm, equal to the logged one
    tr = Trainer(cfg.replace(grad_clip=0.0), make_toy(), toy_data, tmp_path / "free")
    (record,) = tr.fit()
    free = torch.nn.utils.get_total_norm([p.grad for p in tr.task.parameters()])
    assert free.item() == pytest.approx(record["grad_norm"], rel=1e-6) and free.item() > 0.1


def test_config_validation_messages():
    with pytest.raises(ValueError, match="warmup_steps .* must be <= steps"):
        TrainConfig(steps=5, warmup_steps=10)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9, 1.5))
    cfg = TrainConfig().override(["schedule=cosine", "betas=0.5,0.9", "precision=bf16"])
    assert cfg.schedule == "cosine" and cfg.betas == (0.5, 0.9) and TrainConfig.from_dict(cfg.to_dict()) == cfg
