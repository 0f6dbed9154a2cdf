"""FSDP2 (+ activation checkpointing) on every generator family's tiny pipeline, and the tokenizer's GAN phases,
on 2 gloo ranks: trains with finite losses, trunk blocks become FSDP units (not under cross-attention), frozen tokenizer parts stay
unsharded, and `Trainer.unsharded` gives rank 0 a plain generator with the trained weights that samples."""
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from argen import registry
from argen.config import apply_overrides
from argen.generators.task import GeneratorTask
from argen.presets import get_config
from argen.tokenizers.base import token_shape
from argen.train import FSDP, TrainConfig, Trainer
from argen.train.distributed import fsdp_units

PIPELINES = [("fmnist-raster-tiny", []), ("fmnist-randar-tiny", []), ("fmnist-pixel-tiny", []),
             ("fmnist-var-tiny", []), ("fmnist-maskgit-tiny", []), ("fmnist-mar-tiny", []),
             ("emoji-raster-t2i-tiny", ["generator.cond_mode=cross"])]


class Tokens(Dataset):
    def __init__(self, pipe, n=16):
        g = torch.Generator().manual_seed(0)
        layout = pipe.generator.layout
        shape = token_shape(layout, n)
        self.tokens = (torch.randint(0, layout.vocab_size, shape, generator=g) if layout.discrete
                       else torch.randn(shape, generator=g))
        self.text = getattr(pipe.conditioner.config, "text_dim", None)
        self.max_length = getattr(pipe.conditioner.config, "max_length", None)
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        cond = {"labels": i % 3 if self.text is None else -1}
        if self.text is not None:
            cond["text"] = torch.randn(self.max_length, self.text, generator=torch.Generator().manual_seed(i))
            cond["text_mask"] = torch.arange(self.max_length) < 5
        return self.tokens[i], cond


def build(name, overrides):
    cfg = get_config(name)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    torch.manual_seed(0)
    pipe = registry.build(cfg)
    pipe.tokenizer.requires_grad_(False)  # frozen, as a trained tokenizer in train_generator
    return pipe


def _worker(rank, world, store, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    report = {}
    try:
        for name, overrides in PIPELINES:
            pipe = build(name, overrides)
            task = GeneratorTask(pipe.generator, pipe.conditioner)
            units = len(fsdp_units(task))
            cfg = TrainConfig(steps=2, batch_size=4, lr=1e-3, log_every=1, ckpt_every=0, ema_decay=0.9)
            tr = Trainer(cfg, task, Tokens(pipe), Path(out) / name, distributed=FSDP(activation_checkpointing=True))
            records = tr.fit()
            frozen_plain = all(type(p) is torch.nn.Parameter for p in pipe.tokenizer.parameters())
            tr.ema.copy_to(tr.ema_module)
            gen = tr.unsharded(pipe.generator, prepare=lambda g: g.bind_tokenizer(pipe.tokenizer))
            cond = tr.unsharded(pipe.conditioner)
            entry = {"losses": [r["loss"] for r in records], "units": units, "frozen_plain": frozen_plain}
            if rank == 0:
                from argen.pipeline import Pipeline

                plain = Pipeline.from_parts(pipe.tokenizer, cond, gen).eval()
                c = plain.conditioner.null(2)
                entry["images"] = tuple(plain(c, seed=0, num_steps=2).shape) if name.endswith(
                    ("maskgit-tiny", "mar-tiny", "randar-tiny")) else tuple(plain(c, seed=0).shape)
                entry["plain"] = all(type(p) is torch.nn.Parameter for p in gen.parameters())
            report[name] = entry
        # the tokenizer's GAN phases (generator + discriminator optimizers) under FSDP
        from argen.config import apply_overrides as over
        from argen.tokenizers.task import TokenizerTask, TokenizerTaskConfig

        torch.manual_seed(0)
        tok = registry.build(get_config("vq-tiny"))
        task = TokenizerTask(tok, over(TokenizerTaskConfig(), ["loss.disc_start=1"]))
        images = torch.utils.data.TensorDataset(torch.rand(16, 3, 32, 32) * 2 - 1, torch.zeros(16, dtype=torch.long))
        tr = Trainer(TrainConfig(steps=3, batch_size=4, lr=1e-3, log_every=1, ckpt_every=0), task, images,
                     Path(out) / "vq", distributed=FSDP())
        records = tr.fit()
        plain = tr.unsharded(tok)
        if plain is not None:
            plain.eval()  # in train mode the VQ codebook update is a collective
        report["vq-tiny"] = {"losses": [r["loss"] for r in records],
                             "disc": [r["metrics"].get("discriminator/loss") for r in records]}
        if rank == 0:
            report["vq-tiny"]["recon"] = tuple(plain.decode(plain.encode(images.tensors[0][:2])).shape)
            torch.save(report, Path(out) / "report.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_with_activation_checkpointing_trains_and_exports_every_family(tmp_path, one_thread):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    report = torch.load(tmp_path / "report.pt", weights_only=False)
    vq = report.pop("vq-tiny")
    assert all(torch.isfinite(torch.tensor(vq["losses"]))) and vq["recon"] == (2, 3, 32, 32)
    assert vq["disc"][0] == 0 and all(d > 0 for d in vq["disc"][1:])  # the discriminator joined at step 1
    assert set(report) == {name for name, _ in PIPELINES}
    for name, entry in report.items():
        assert len(entry["losses"]) == 2 and all(torch.isfinite(torch.tensor(entry["losses"]))), name
        assert entry["frozen_plain"] and entry["plain"], name
        assert entry["images"][0] == 2 and entry["images"][1] == 3, name
        cross = "t2i" in name
        assert (entry["units"] == 0) == cross, (name, entry["units"])  # cross-attending trunks: root unit only


def _same_math(rank, world, store, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        losses, state = _var_run(FSDP(), Path(out) / "fsdp")
        if rank == 0:
            torch.save((losses, state), Path(out) / "var.pt")
    finally:
        dist.destroy_process_group()


def _var_run(strategy, out):
    """next-scale (AdaLN blocks as FSDP units, `modulation` a registered forward method), no randomness."""
    from argen.train import Distributed

    pipe = build("fmnist-var-tiny", ["conditioner.dropout=0.0"])
    world = 1 if strategy is None else 2
    cfg = TrainConfig(steps=3, batch_size=8 // world, lr=1e-2, log_every=1, ckpt_every=0)
    tr = Trainer(cfg, GeneratorTask(pipe.generator, pipe.conditioner), Tokens(pipe), out,
                 distributed=strategy or Distributed())
    losses = [r["loss"] for r in tr.fit()]
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
             for k, v in tr.task.state_dict().items()}
    return losses, state


@pytest.mark.slow
def test_fsdp_units_with_forward_methods_compute_one_process_gradients(tmp_path, one_thread):
    mp.spawn(_same_math, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    losses, state = torch.load(tmp_path / "var.pt", weights_only=False)
    ref_losses, ref = _var_run(None, tmp_path / "one")
    assert losses == pytest.approx(ref_losses, abs=1e-5)
    for k in ref:
        torch.testing.assert_close(state[k].float(), ref[k].float(), atol=1e-4, rtol=1e-4, msg=k)
