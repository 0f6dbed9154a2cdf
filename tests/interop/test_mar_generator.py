"""Parity of argen's MAR generator + sampler with the official MAR code (tests/fixtures/mar: a tiny official-shaped
MAR with seeded weights and injected randomness): the training loss for a given order, mask count, label drop,
timesteps and noise; the head's condition vectors; the reveal schedule; and a whole sample_tokens run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import argen
from argen.errors import CheckpointError
from argen.generators.mar import MARConfig
from argen.heads.diffusion import DiffusionHeadConfig
from argen.interop.mar import convert_mar
from argen.presets import get_config
from argen.sampling import generate
from argen.sampling.loop import guided_conditioning
from seeded_weights import seeded_state_dict

FIX = Path(__file__).parent.parent / "fixtures" / "mar"
SPEC = json.loads((FIX / "spec.json").read_text())
GOLD = load_file(str(FIX / "golden.safetensors"))
ATOL = 2e-5
pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny_config() -> MARConfig:
    m = SPEC["mar"]
    return MARConfig(scales=((4, 4),), token_dim=m["vae_embed_dim"], dim=m["encoder_embed_dim"],
                     encoder_depth=m["encoder_depth"], decoder_depth=m["decoder_depth"], num_heads=m["encoder_num_heads"],
                     buffer_size=m["buffer_size"], attn_dropout=0.0, proj_dropout=0.0, num_steps=4,
                     head=DiffusionHeadConfig(token_dim=m["vae_embed_dim"], cond_dim=m["encoder_embed_dim"],
                                              depth=m["diffloss_d"], width=m["diffloss_w"]))


@pytest.fixture(scope="module")
def converted():
    state = seeded_state_dict(SPEC["mar_table"], SPEC["mar_seed"])
    ckpt = {"model_ema": state, "args": None}
    from argen.interop.mar import MarCheckpoint

    gen, cond, conv = convert_mar(MarCheckpoint(state=state, args={"num_sampling_steps": "10",
                                                                   "diffusion_batch_mul": 2}), tiny_config())
    assert gen.config.head.sampling_steps == 10 and gen.config.head.batch_mul == 2  # from the run's args
    assert cond.num_classes == SPEC["mar"]["class_num"] and not ckpt["args"]
    return gen, cond


def tokens_of(latents: torch.Tensor) -> torch.Tensor:
    return latents.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, L, C): MAR's patchify with p = 1


def test_training_loss_and_condition_vectors_match_official(converted):
    gen, cond = converted
    gen.train()
    try:
        tokens = tokens_of(GOLD["mar_latents"])
        for labels, z_key, loss_key in (([-1, 7], "mar_z", "mar_loss"), ([3, 7], "mar_nodrop_z", "mar_nodrop_loss")):
            c = cond(cond.parse(labels))  # row 0 dropped = the null row (MAR's fake_latent)
            mask = gen.training_mask(2, None, tokens.device, order=GOLD["mar_orders"], num_masked=13)
            assert torch.equal(mask, GOLD["mar_mask"].bool())
            with torch.no_grad():
                z = gen.condition(tokens, ~mask, c)
            torch.testing.assert_close(z, GOLD[z_key], atol=ATOL, rtol=0)
            out = gen.loss(tokens, c, order=GOLD["mar_orders"], num_masked=13, timesteps=GOLD["mar_t"],
                           noise=GOLD["mar_noise"])
            torch.testing.assert_close(out.loss, GOLD[loss_key], atol=ATOL, rtol=1e-5)
    finally:
        gen.eval()


@pytest.mark.parametrize("K", [4, 16])
def test_reveal_schedule_matches_official(converted, K):
    gen, cond = converted
    from argen.sampling.loop import resolve_options
    from argen.sampling.samplers import sampler_for

    opts, dec = resolve_options(gen, num_steps=K, order=GOLD["mar_orders"], cfg=3.0, cfg_schedule="linear")
    sampler = sampler_for(gen)(gen, opts, dec)
    rng = torch.Generator().manual_seed(0)
    state = sampler.begin(guided_conditioning(cond, cond.parse([1, 8]), True, torch.device("cpu")), 2, rng)
    step_of = torch.full((2, 16), -1)
    scales = []
    from argen.sampling import guidance_scale

    while not state.done:
        z = sampler.predict(state, rng)
        step_of[state.to_predict] = state.step
        scales.append(guidance_scale(3.0, "linear", progress=sampler.progress(state)))
        x, s = gen.head.sample(z, opts, rng, cfg_scale=scales[-1], guided=True)
        sampler.commit(state, x, s, rng=rng, cfg_scale=scales[-1])
    assert torch.equal(step_of, GOLD[f"sched_K{K}_step_of_position"])
    assert scales == pytest.approx(SPEC["schedules"][f"L16_K{K}"]["cfg_linear_3.0"])


@pytest.mark.parametrize("run", ["cfg", "nocfg"])
def test_whole_sampling_run_matches_official(converted, run, monkeypatch):
    """argen.generate with the official per-call head noise injected reproduces sample_tokens' output."""
    gen, cond = converted
    e2e = SPEC["e2e"][run]
    calls = []
    real = gen.head.sample

    def recorded(z, opts, rng, **kw):
        k = len(calls)
        torch.testing.assert_close(z, GOLD[f"e2e_{run}_z_{k}"], atol=ATOL, rtol=0)  # the head's inputs
        n = GOLD[f"e2e_{run}_x_T_{k}"].shape[0]
        noise = torch.cat([GOLD[f"e2e_{run}_x_T_{k}"][None], GOLD[f"e2e_{run}_step_noise_{k}"][:, :n]])
        calls.append(kw.get("cfg_scale"))
        return real(z, opts, rng, noise=noise, **kw)

    monkeypatch.setattr(gen.head, "sample", recorded)
    tokens = generate(gen, cond, e2e["labels"], cfg=e2e["cfg"], cfg_schedule="linear", temperature=1.0,
                      num_steps=e2e["num_iter"], order=GOLD["mar_orders"])
    want = tokens_of(GOLD[f"e2e_{run}_tokens"])
    scale = want.abs().max()
    torch.testing.assert_close(tokens / scale, want / scale, atol=1e-5, rtol=0)  # untrained: large values
    if run == "cfg":
        assert calls == pytest.approx(e2e["cfg_per_step"])


def test_converter_checks_the_architecture():
    state = seeded_state_dict(SPEC["mar_table"], SPEC["mar_seed"])
    with pytest.raises(CheckpointError, match="dim 32 in the file vs 768"):
        convert_mar(state, get_config("mar-b"))
    with pytest.raises(CheckpointError, match="not a MAR state dict"):
        convert_mar({"z_proj.weight": torch.zeros(4, 4)}, tiny_config())
    extra = dict(state, **{"encoder_blocks.0.attn.extra": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="unexpected in the file: encoder_blocks.0.attn.extra"):
        convert_mar(extra, tiny_config())


def test_full_size_mar_b_keys_fit():
    """Every key and shape of the real MAR-B checkpoint maps onto argen's mar-b (no weights needed)."""
    from argen.interop import common
    from argen.interop.mar import MAR_RULES, mar_state
    from argen import registry
    from argen.saving import deferred_init

    shapes = SPEC["shapes_mar_b"]
    state, _ = mar_state({k: torch.empty(v, device="meta") for k, v in shapes.items()})
    conv = common.rename(state, [(r"class_emb_with_null", "conditioner.embedding_table.weight")] + MAR_RULES)
    model = torch.nn.ModuleDict({
        "generator": deferred_init(lambda: registry.build(get_config("mar-b"))),
        "conditioner": deferred_init(lambda: registry.build(registry.config_class("class")(dim=768, num_classes=1000)))})
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in conv.state.items()}
    assert own == theirs


def test_cli_convert_mar_writes_a_pipeline_with_the_chosen_weights(tmp_path, capsys):
    import argparse

    from argen.cli import main

    vae = seeded_state_dict(SPEC["vae_table"], SPEC["vae_seed"])
    torch.save({"model": vae}, tmp_path / "kl.ckpt")
    ema = seeded_state_dict(SPEC["mar_table"], SPEC["mar_seed"])
    raw = {k: v + 0.01 for k, v in ema.items()}
    torch.save({"model": raw, "model_ema": ema, "epoch": 3, "args": argparse.Namespace(num_sampling_steps="10",
                                                                                        diffusion_batch_mul=2)},
               tmp_path / "checkpoint-last.pth")
    m = SPEC["mar"]
    sets = ["--set", f"dim={m['encoder_embed_dim']}", "--set", "encoder_depth=2", "--set", "decoder_depth=2",
            "--set", "num_heads=4", "--set", "buffer_size=4", "--set", "token_dim=4", "--set", "scales=[[4,4]]",
            "--set", "num_steps=4", "--set", "head.token_dim=4", "--set", "head.cond_dim=32", "--set", "head.depth=2",
            "--set", "head.width=32"]
    common = ["convert", "mar", "--tokenizer", str(tmp_path / "kl.ckpt"), "--generator",
              str(tmp_path / "checkpoint-last.pth"), *sets]
    assert main(common + ["--out", str(tmp_path / "p")]) == 0, capsys.readouterr().err
    assert "all keys and shapes matched" in capsys.readouterr().out
    pipe = argen.load(tmp_path / "p")
    gen, _, _ = convert_mar(ema, tiny_config())
    torch.testing.assert_close(pipe.generator.z_proj.weight, gen.z_proj.weight, atol=0, rtol=0)  # EMA by default
    assert main(common + ["--weights", "model", "--out", str(tmp_path / "raw")]) == 0
    assert torch.allclose(argen.load(tmp_path / "raw").generator.z_proj.weight, gen.z_proj.weight + 0.01)
    assert pipe(["none", 3], seed=0, num_steps=2).shape[0] == 2
