"""Parity of converted VAR checkpoints with golden outputs of the official code (tiny official-shaped
config: VQVAE ch 32 / 64 codes / z 8 / scales 1..4 on 64 px, VAR depth 2 in three variants; weights rebuilt
from a seed, see tests/fixtures/var/README.md), plus the strict buffer checks and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import argen
from argen.errors import CheckpointError
from argen.interop import var as iv
from argen.sampling import guidance_scale
from argen.sampling.loop import guided_conditioning, resolve_options
from argen.sampling.samplers import sampler_for
from seeded_weights import seeded_state_dict

FIX = Path(__file__).parent.parent / "fixtures" / "var"
SPEC = json.loads((FIX / "spec.json").read_text())
GOLD = load_file(str(FIX / "golden.safetensors"))
VARIANTS = sorted(SPEC["variants"])
VAR_CFG = float(GOLD["perblock/sample_cfg"])  # VAR's cfg; argen's is 1 + cfg with the linear_scale schedule
ATOL = 1e-4


def _vae_state() -> dict:
    state = seeded_state_dict(SPEC["vae"]["table"], SPEC["vae"]["seed"])
    state.update({k.split("/", 1)[1]: v for k, v in GOLD.items() if k.startswith("vae_buffer/")})
    return state


VAE_STATE = _vae_state()


def vae_state() -> dict:
    return dict(VAE_STATE)  # converters never modify tensors in place


def var_state(name: str) -> dict:
    v = SPEC["variants"][name]
    state = seeded_state_dict(v["table"], v["seed"])
    state.update({k.split("/", 2)[2]: t for k, t in GOLD.items() if k.startswith(f"{name}/buffer/")})
    return state


@pytest.fixture(scope="module")
def converted():
    vae = vae_state()
    return {name: iv.convert("vae.pth", "var.pth", vae_state=vae, var_state=var_state(name)) for name in VARIANTS}


def conditioning(cond, labels: torch.Tensor, guided: bool = False):
    labels = torch.where(labels >= cond.num_classes, torch.full_like(labels, -1), labels)  # official null id -> -1
    return guided_conditioning(cond, cond.parse(labels), guided, torch.device("cpu"))


def test_config_read_from_weights(converted):
    tok, cond, gen, notes = converted["shared"]
    assert gen.config.depth == 2 and gen.config.width == 128 and gen.config.heads == 2
    assert cond.num_classes == SPEC["num_classes"] and gen.config.vocab_size == SPEC["vae"]["vocab_size"]
    assert cond.dim == gen.cond_dim == 128
    assert gen.config.scales == tuple((p, p) for p in SPEC["patch_nums"])
    assert gen.config.shared_adaln and gen.config.qk_norm
    assert not converted["nol2"][2].config.qk_norm and not converted["perblock"][2].config.shared_adaln
    assert gen.quantizer is tok.quantizer  # bound: one codebook, the tokenizer's
    assert tok.config.net.ch == SPEC["vae"]["ch"] and tok.config.resolution == SPEC["image_size"]
    assert tok.config.quantizer.phi_indices == (0, 1, 2, 3)
    assert any("checked and dropped 4 buffers" in n for n in notes)


def test_tokenizer_matches_official(converted):
    tok = converted["perblock"][0]
    with torch.no_grad():
        latent = tok.encode_latent(GOLD["images"])
        torch.testing.assert_close(latent, GOLD["latent"], atol=ATOL, rtol=0)
        ids = tok.quantizer(latent).ids
        assert torch.equal(ids, GOLD["ids"])  # (B, 30) coarse -> fine
        torch.testing.assert_close(tok.decode(ids), GOLD["recon"], atol=ATOL, rtol=0)
        teacher = tok.quantizer.build_next_scale_inputs(GOLD["ids"])
    torch.testing.assert_close(teacher, GOLD["teacher_input"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_teacher_forced_logits_and_loss(converted, name):
    _, cond, gen, _ = converted[name]
    with torch.no_grad():
        c = conditioning(cond, GOLD[f"{name}/tf_labels"])
        torch.testing.assert_close(gen(GOLD["ids"], c), GOLD[f"{name}/tf_logits"], atol=ATOL, rtol=0)
        out = gen.loss(GOLD["ids"], c)
    torch.testing.assert_close(out.loss, GOLD[f"{name}/tf_loss"], atol=1e-5, rtol=0)
    per_scale = torch.stack([out.metrics[f"nll_scale{k}"] for k in range(len(SPEC["patch_nums"]))])
    torch.testing.assert_close(per_scale, GOLD[f"{name}/tf_loss_per_scale"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_cfg_samples_match_official(converted, name):
    tok, cond, gen, _ = converted[name]
    labels = GOLD[f"{name}/sample_labels"]
    tokens = argen.generate(gen, cond, labels, cfg=1 + VAR_CFG, cfg_schedule="linear_scale", temperature=0)
    assert torch.equal(tokens, GOLD[f"{name}/sample_ids"])
    with torch.no_grad():
        torch.testing.assert_close(tok.quantizer.ids_to_fhat(tokens), GOLD[f"{name}/sample_fhat"], atol=1e-5, rtol=0)
        if name == "perblock":  # decoding is the tokenizer's part: once is enough
            torch.testing.assert_close(tok.decode(tokens), GOLD[f"{name}/sample_images"], atol=ATOL, rtol=0)


def test_guided_logits_per_scale_match_official(converted):
    """Drive the sampler by hand: VAR's t = cfg * k / (S - 1) is argen's linear_scale with cfg + 1."""
    _, cond, gen, _ = converted["perblock"]
    labels = GOLD["perblock/sample_labels"]
    opts, dec = resolve_options(gen, cfg=1 + VAR_CFG, cfg_schedule="linear_scale", temperature=0)
    sampler = sampler_for(gen)(gen, opts, dec)
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = sampler.begin(conditioning(cond, labels, guided=True), len(labels), rng)
        while not state.done:
            a, b = gen.config.bounds[state.step]
            s = guidance_scale(opts.cfg, opts.cfg_schedule, step=state.step, num_steps=state.num_steps)
            guided = gen.head.guide(sampler.predict(state, rng), s, True)
            torch.testing.assert_close(guided, GOLD["perblock/sample_logits"][:, a:b], atol=ATOL, rtol=0)
            tokens, scores = gen.head.sample(guided, opts)
            sampler.commit(state, tokens, scores, rng=rng, cfg_scale=s)


def test_buffers_are_checked_not_ignored():
    vae = vae_state()
    good = var_state("perblock")
    bad_levels = dict(good, lvl_1L=good["lvl_1L"].flip(-1))
    with pytest.raises(CheckpointError, match="lvl_1L"):
        iv.convert("vae.pth", "var.pth", vae_state=vae, var_state=bad_levels)
    mask = good["attn_bias_for_masking"].clone()
    mask[..., 0, -1] = 0.0  # let the first token see the finest scale
    with pytest.raises(CheckpointError, match="block-causal"):
        iv.convert("vae.pth", "var.pth", vae_state=vae, var_state=dict(good, attn_bias_for_masking=mask))
    with pytest.raises(CheckpointError, match="zero_k_bias is not zero"):
        iv.convert("vae.pth", "var.pth", vae_state=vae,
                   var_state=dict(good, **{"blocks.1.attn.zero_k_bias": torch.ones(128)}))


def test_strict_key_report_names_official_keys():
    vae = vae_state()
    extra = dict(var_state("perblock"), **{"blocks.0.attn.extra_bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="unexpected in the file: blocks.0.attn.extra_bias"):
        iv.convert("vae.pth", "var.pth", vae_state=vae, var_state=extra)
    missing = var_state("perblock")
    del missing["blocks.1.attn.q_bias"]
    with pytest.raises(CheckpointError, match="missing from the file: generator.blocks.1.attention.q_bias"):
        iv.convert("vae.pth", "var.pth", vae_state=vae, var_state=missing)
    with pytest.raises(CheckpointError, match="not a VAR transformer"):
        iv._read(_save_tmp(vae), "var")


def _save_tmp(state: dict) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "file.pth"
    torch.save(state, path)
    return path


def test_cli_convert_writes_a_loadable_pipeline(tmp_path, capsys):
    from argen.cli import main

    torch.save(vae_state(), tmp_path / "vae.pth")
    torch.save(var_state("perblock"), tmp_path / "var_d2.pth")
    rc = main(["convert", "var", "--tokenizer", str(tmp_path / "vae.pth"), "--generator", str(tmp_path / "var_d2.pth"),
               "--out", str(tmp_path / "pipe")])
    assert rc == 0 and "checked and dropped 4 buffers" in capsys.readouterr().out
    pipe = argen.load(tmp_path / "pipe")
    assert pipe.config.sampling.cfg_schedule == "linear_scale" and pipe.config.sampling.top_k == 900
    labels = GOLD["perblock/sample_labels"]
    tokens = pipe.sample_tokens(labels, cfg=1 + VAR_CFG, temperature=0, top_k=0, top_p=1.0)
    assert torch.equal(tokens, GOLD["perblock/sample_ids"])
    assert main(["convert", "var", "--tokenizer", str(tmp_path / "var_d2.pth"), "--generator",
                 str(tmp_path / "var_d2.pth"), "--out", str(tmp_path / "bad")]) == 1
    assert "not a VAR VQVAE checkpoint" in capsys.readouterr().err
