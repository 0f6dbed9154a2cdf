import importlib.util
import json

import pytest
import torch
from torch import nn

from argen.errors import ConfigError
from argen.train import Callback, DivergenceError, Every, TrainConfig, Trainer
from argen.train.rng import seed_everything
from argen.train.sampler import ResumableSampler
from argen.types import LossOutput

BASE = TrainConfig(steps=7, batch_size=6, lr=1e-2, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1,
                   log_every=1, ckpt_every=3, keep_checkpoints=0)


def _records(out_dir, name="log.jsonl"):
    return [json.loads(line) for line in (out_dir / name).read_text().splitlines()]


def _comparable(records):
    return [{k: v for k, v in r.items() if k not in ("throughput", "elapsed")} for r in records]


@pytest.mark.parametrize("ema, accum, stop", [(0.0, 1, 3), (0.9, 2, 4)])
def test_exact_resume_matches_uninterrupted_run(toy_data, make_toy, tmp_path, ema, accum, stop):
    cfg = BASE.replace(ema_decay=ema, grad_accum=accum)
    full = Trainer(cfg, make_toy(), toy_data, tmp_path / "full")
    full.fit()

    first = Trainer(cfg, make_toy(), toy_data, tmp_path / "split")
    first.fit(stop_at=stop)
    del first  # a new process: fresh objects, different init, resumed from disk
    resumed = Trainer(cfg, make_toy(seed=123), toy_data, tmp_path / "split", resume=True)
    assert resumed.step == stop
    resumed.fit()

    a, b = _records(tmp_path / "full"), _records(tmp_path / "split")
    assert [r["step"] for r in b] == list(range(1, 8))
    assert _comparable(a) == _comparable(b)  # bitwise-equal losses, metrics, lr, grad norms
    assert len({r["loss"] for r in a}) > 1  # the comparison is not vacuous
    for (k, v), w in zip(full.task.state_dict().items(), resumed.task.state_dict().values()):
        assert torch.equal(v, w), k
    if ema:
        assert all(torch.equal(full.ema.shadow[k], resumed.ema.shadow[k]) for k in full.ema.shadow)
        assert not torch.equal(full.ema.shadow["net.0.weight"], full.task.net[0].weight)


def test_resume_changes_the_run_if_rng_were_not_restored(toy_data, make_toy, tmp_path):
    """Sanity check that the exact-resume test can fail: dropout/noise really depend on the RNG."""
    cfg = BASE.replace(steps=2)
    a = Trainer(cfg, make_toy(), toy_data, tmp_path / "a").fit()
    b = Trainer(cfg.replace(seed=1), make_toy(), toy_data, tmp_path / "b").fit()
    assert a[1]["loss"] != b[1]["loss"]


def test_jsonl_log_lines_parse(toy_data, make_toy, tmp_path):
    seen = []

    class Eval(Callback):
        def on_step_end(self, trainer, step):
            seen.append(("step", step))
            if step % 2 == 0:
                trainer.log_eval({"val": float(step), "t": torch.tensor(0.5)})

        def on_checkpoint(self, trainer, path):
            seen.append(("ckpt", path.name))

    cfg = BASE.replace(steps=5, log_every=2, ckpt_every=0)
    Trainer(cfg, make_toy(), toy_data, tmp_path, callbacks=[Eval()]).fit()
    records = _records(tmp_path)
    assert [r["step"] for r in records] == [2, 4, 5]  # every 2 steps and the last one
    for r in records:
        assert set(r) == {"step", "epoch", "loss", "metrics", "lr", "grad_norm", "throughput", "elapsed"}
        assert isinstance(r["loss"], float) and r["grad_norm"] > 0 and r["throughput"] > 0
        assert set(r["metrics"]) == {"acc", "const"} and r["metrics"]["const"] == 2.0
    assert _records(tmp_path, "eval.jsonl") == [{"step": 2, "metrics": {"val": 2.0, "t": 0.5}},
                                               {"step": 4, "metrics": {"val": 4.0, "t": 0.5}}]
    assert seen[-2:] == [("step", 5), ("ckpt", "step-00000005.pt")]  # callbacks run before the checkpoint
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 5


def test_every_callback_and_data_order(toy_data, make_toy, tmp_path):
    calls = []
    cfg = BASE.replace(steps=5, batch_size=4, ckpt_every=0)

    class Spy(nn.Module):  # records which samples each step sees
        def __init__(self):
            super().__init__()
            self.inner = make_toy()

        def forward(self, batch, ctx):
            calls.append(batch[1].tolist())
            return self.inner(batch, ctx)

    steps = []
    Trainer(cfg, Spy(), toy_data, tmp_path, callbacks=[Every(2, lambda t, s: steps.append(s))]).fit()
    assert steps == [2, 4, 5]
    order = ResumableSampler(40, seed=0).shard(0)[:20]
    assert sum(calls, []) == toy_data.tensors[1][order].tolist()


def test_fit_leaves_global_rng_untouched(toy_data, make_toy, tmp_path):
    task = make_toy()
    before = torch.get_rng_state()
    Trainer(BASE.replace(steps=2), task, toy_data, tmp_path).fit()
    assert torch.equal(torch.get_rng_state(), before)


def test_bf16_on_cpu_runs_fp32(toy_data, make_toy, tmp_path):
    a = Trainer(BASE.replace(steps=2), make_toy(), toy_data, tmp_path / "a").fit()
    b = Trainer(BASE.replace(steps=2, precision="bf16"), make_toy(), toy_data, tmp_path / "b").fit()
    assert _comparable(a) == _comparable(b)


def test_gan_phases_match_a_manual_two_optimizer_step(toy_data, make_gan, tmp_path):
    cfg = TrainConfig(steps=1, batch_size=8, lr=1e-2, weight_decay=0.0, grad_clip=0.0, log_every=1)
    tr = Trainer(cfg, make_gan(), toy_data, tmp_path)
    (record,) = tr.fit()
    assert set(tr.optimizers) == {"generator", "discriminator"}
    assert {"discriminator/loss", "discriminator/lr", "discriminator/grad_norm", "fake_mean"} <= set(record["metrics"])
    assert record["metrics"]["discriminator/lr"] == pytest.approx(2e-3)

    # the same step by hand: G update, then D update with D's grads zeroed first
    ref = make_gan()
    rng = torch.Generator()
    seed_everything(cfg.seed, rng)
    real = toy_data.tensors[0][ResumableSampler(40, seed=cfg.seed).shard(0)[:8]]
    opt_g = torch.optim.AdamW(ref.G.parameters(), lr=1e-2, weight_decay=0.0)
    opt_d = torch.optim.AdamW(ref.D.parameters(), lr=2e-3, weight_decay=0.0)
    fake = ref.G(torch.randn(8, 4, generator=rng))
    (-ref.D(fake).mean() + 0.1 * fake.pow(2).mean()).backward()
    opt_g.step()
    opt_d.zero_grad()
    with torch.no_grad():
        fake = ref.G(torch.randn(8, 4, generator=rng))
    (torch.relu(1 - ref.D(real)).mean() + torch.relu(1 + ref.D(fake)).mean()).backward()
    opt_d.step()
    for (k, v), w in zip(ref.state_dict().items(), tr.task.state_dict().values()):
        torch.testing.assert_close(w, v, rtol=0, atol=1e-6, msg=k)


def test_gan_phase_without_grad_skips_its_step_and_resumes_exactly(toy_data, make_gan, tmp_path):
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-2, log_every=1, ckpt_every=2, ema_decay=0.5)
    task = make_gan(disc_start=2)
    d0 = [p.detach().clone() for p in task.D.parameters()]
    tr = Trainer(cfg, task, toy_data, tmp_path / "full")
    tr.fit(stop_at=2)
    assert all(torch.equal(a, b) for a, b in zip(d0, task.D.parameters()))  # D untouched before disc_start
    assert tr.ema.shadow.keys() == task.G.state_dict().keys()  # ema_module() = the generator
    tr.fit()
    assert not all(torch.equal(a, b) for a, b in zip(d0, task.D.parameters()))
    split = Trainer(cfg, make_gan(disc_start=2), toy_data, tmp_path / "split")
    split.fit(stop_at=3)
    Trainer(cfg, make_gan(seed=5, disc_start=2), toy_data, tmp_path / "split", resume=True).fit()
    assert _comparable(_records(tmp_path / "full")) == _comparable(_records(tmp_path / "split"))


class _Bad(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.lin = nn.Linear(8, 1)
        self.mode = mode

    def forward(self, batch, ctx):
        y = self.lin(batch[0]).mean()
        if self.mode == "nan":
            return LossOutput(y * float("nan"))
        return {"loss": y}


def test_divergence_and_wrong_output_raise(toy_data, tmp_path):
    with pytest.raises(DivergenceError, match="loss is nan at step 1"):
        Trainer(BASE.replace(steps=2), _Bad("nan"), toy_data, tmp_path / "nan").fit()
    with pytest.raises(TypeError, match="must return argen.types.LossOutput"):
        Trainer(BASE.replace(steps=2), _Bad("dict"), toy_data, tmp_path / "dict").fit()


def test_phase_validation(toy_data, make_gan, tmp_path):
    gan = make_gan()
    gan.phases = lambda: {"generator": list(gan.G.parameters())}
    with pytest.raises(ConfigError, match="trainable parameters in no phase"):
        Trainer(BASE, gan, toy_data, tmp_path)
    gan.phases = lambda: {"a": list(gan.parameters()), "b": list(gan.D.parameters())}
    with pytest.raises(ConfigError, match="is in phases 'a' and 'b'"):
        Trainer(BASE, gan, toy_data, tmp_path)
    gan.phases = lambda: {"a": {"params": list(gan.parameters()), "momentum": 0.9}}
    with pytest.raises(ConfigError, match="allowed keys"):
        Trainer(BASE, gan, toy_data, tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_is_a_clear_error(toy_data, make_toy, tmp_path):
    with pytest.raises(ConfigError, match="pip install"):
        Trainer(BASE.replace(tensorboard=True), make_toy(), toy_data, tmp_path)
